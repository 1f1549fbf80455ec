"""Tiny random InternVL2 / 2.5 checkpoints in the original remote-code layout (InternVLChatModel).

`save_internvl_chat_checkpoint(path, llm="internlm2" | "qwen2")` writes what the published repositories hold:
config.json with `vision_config` (InternViT) and `llm_config` (InternLM2 or Qwen2) as the remote code saves them,
model.safetensors under the original names (fused `attn.qkv`, InternLM2's fused `attention.wqkv`, `mlp1.*`), and
the tokenizer files: InternLM2's `tokenizer.model` (a small SentencePiece BPE with byte fallback, built here
deterministically) with its tokenizer_config.json, or a Qwen2 tokenizer. The tiny ViT's 64 px tiles of 8 px patches
give 16 tokens per tile after pixel shuffle (the real 448 px / 14 px give 256).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from framefusion.models.internvl_chat import build_config, build_model, to_original
from framefusion.models.internvl_chat.sentencepiece import (
    BYTE,
    CONTROL,
    NORMAL,
    SPACE,
    UNKNOWN,
    Piece,
    SentencePieceModel,
    write_model,
)

INTERNLM2_SPECIAL = ("<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                     "<|im_start|>")  # the last vocabulary slots of InternLM2's tokenizer.model, renamed
INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
_CORPUS = (
    "What is happening in this video? Describe the video in detail. What color is the square?",
    "The quick brown fox jumps over the lazy dog. A man is walking his dog in the park.",
    "Frame1: Frame2: Frame3: Frame4: Frame5: Frame6: Frame7: Frame8: Frame9: Frame10: Frame11: Frame12:",
    "system user assistant Image-1: Image-2: Video-1: answer question red green blue yellow left right up down",
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室",
)
_AUTO_MAP = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
             "AutoModel": "modeling_internvl_chat.InternVLChatModel",
             "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"}


def train_bpe_pieces(corpus: tuple[str, ...], merges: int) -> tuple[list[str], list[str]]:
    """(characters, merged pieces in merge order) of a small SentencePiece-style BPE: words carry their leading
    space as U+2581; the most frequent adjacent pair merges first (ties: the lexically smallest)."""
    words = Counter()
    for line in corpus:
        for word in line.split(" "):
            if word:
                words[SPACE + word] += 1
    chars = sorted({c for word in words for c in word} | {"\n"})
    splits = {word: list(word) for word in words}
    learned: list[str] = []
    for _ in range(merges):
        pairs = Counter()
        for word, count in words.items():
            parts = splits[word]
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), _count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        learned.append(a + b)
        for word, parts in splits.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            splits[word] = merged
    return chars, learned


def internlm2_sentencepiece(merges: int = 160) -> SentencePieceModel:
    """A small InternLM2-style SentencePiece model: <unk> <s> </s>, 256 byte pieces, merged pieces, characters,
    then the six renamed chat slots (byte fallback on, no dummy prefix, identity normalisation)."""
    chars, learned = train_bpe_pieces(_CORPUS, merges)
    pieces = [Piece("<unk>", 0.0, UNKNOWN), Piece("<s>", 0.0, CONTROL), Piece("</s>", 0.0, CONTROL)]
    pieces += [Piece(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    pieces += [Piece(text, -float(rank), NORMAL) for rank, text in enumerate(learned)]
    pieces += [Piece(c, -float(len(learned) + i), NORMAL) for i, c in enumerate(chars) if c not in learned]
    pieces += [Piece(f"[UNUSED_TOKEN_{141 + i}]", 0.0, NORMAL) for i in range(len(INTERNLM2_SPECIAL))]
    return SentencePieceModel(pieces=pieces, byte_fallback=True, add_dummy_prefix=False,
                              remove_extra_whitespaces=False, normalizer="identity",
                              special_pieces={"unk_piece": "<unk>", "bos_piece": "<s>", "eos_piece": "</s>"})


def _added(content: str, special: bool = True) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def write_internlm2_tokenizer(path: Path) -> int:
    """InternLM2's tokenizer files (tokenizer.model, tokenizer_config.json, special_tokens_map.json); returns the
    vocabulary size with InternVL's added tokens."""
    model = internlm2_sentencepiece()
    write_model(model, path / "tokenizer.model")
    size = len(model.pieces)
    decoder = {"0": _added("<unk>"), "1": _added("<s>"), "2": _added("</s>")}
    decoder.update({str(size - len(INTERNLM2_SPECIAL) + i): _added(t) for i, t in enumerate(INTERNLM2_SPECIAL)})
    decoder.update({str(size + i): _added(t) for i, t in enumerate(INTERNVL_TOKENS)})
    settings = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>",
                                      "<|interpreter|>", "<|plugin|>", *INTERNVL_TOKENS],
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer",
                                       "tokenization_internlm2_fast.InternLM2TokenizerFast"]},
        "bos_token": "<s>", "clean_up_tokenization_spaces": False, "decode_with_prefix_space": False,
        "eos_token": "</s>", "model_max_length": 16384, "pad_token": "</s>", "sp_model_kwargs": None,
        "tokenizer_class": "InternLM2Tokenizer", "unk_token": "<unk>",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
               "additional_special_tokens": settings["additional_special_tokens"]}
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return size + len(INTERNVL_TOKENS)


def tiny_tokenizer():
    """The tiny InternLM2 tokenizer, loaded as a checkpoint's would be (for random-weight models)."""
    import tempfile

    from framefusion.models.internvl_chat.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_internlm2_tokenizer(Path(folder))
        return load_tokenizer(Path(folder))


def write_qwen2_tokenizer(path: Path) -> int:
    """A Qwen2 tokenizer (byte-level BPE, Qwen2's pre-tokenizer) with InternVL's tokens; returns its size."""
    from transformers import Qwen2Tokenizer

    from framefusion.tiny.tokenizer import build_tokenizer

    trained = json.loads(build_tokenizer(list(_CORPUS), family="qwen2_vl").backend_tokenizer.to_str())["model"]
    vocab = {text: i for text, i in trained["vocab"].items() if not text.startswith("<|")}
    vocab = {text: i for i, text in enumerate(sorted(vocab, key=vocab.get))}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace")
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                  "extra_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                                           *INTERNVL_TOKENS]})
    tokenizer.save_pretrained(str(path))
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return len(tokenizer)


def original_config(llm: str, *, vocab_size: int, num_layers: int, hidden_size: int, num_heads: int,
                    num_kv_heads: int, intermediate_size: int, vision_layers: int, vision_hidden: int,
                    vision_heads: int, image_size: int, patch_size: int, qk_normalization: bool,
                    bos: int | None, eos: int, pad: int) -> dict[str, Any]:
    """config.json as the remote-code InternVLChatConfig writes it (the keys its __init__ reads)."""
    common = {"vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": intermediate_size,
              "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads,
              "hidden_act": "silu", "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "rope_scaling": {"type": "dynamic", "factor": 2.0}, "tie_word_embeddings": False,
              "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "torch_dtype": "float32",
              "initializer_range": 0.02}
    if llm == "internlm2":
        llm_config = {**common, "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "bias": False,
                      "rms_norm_eps": 1e-5, "attn_implementation": "eager",
                      "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                                   "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                                   "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}
    elif llm == "qwen2":
        llm_config = {**common, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6,
                      "use_sliding_window": False, "sliding_window": None, "max_window_layers": num_layers}
    else:
        raise ValueError(f"llm must be 'internlm2' or 'qwen2', got {llm!r}")
    vision = {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": vision_hidden,
              "intermediate_size": 4 * vision_hidden, "num_hidden_layers": vision_layers,
              "num_attention_heads": vision_heads, "num_channels": 3, "image_size": image_size,
              "patch_size": patch_size, "hidden_act": "gelu", "norm_type": "rms_norm" if qk_normalization
              else "layer_norm", "qkv_bias": not qk_normalization, "qk_normalization": qk_normalization,
              "layer_norm_eps": 1e-6, "dropout": 0.0, "attention_dropout": 0.0, "drop_path_rate": 0.0,
              "initializer_factor": 1.0, "initializer_range": 0.02, "use_flash_attn": False,
              "torch_dtype": "float32"}
    return {"architectures": ["InternVLChatModel"], "auto_map": _AUTO_MAP, "model_type": "internvl_chat",
            "downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": image_size,
            "llm_config": llm_config, "max_dynamic_patch": 6, "min_dynamic_patch": 1, "ps_version": "v2",
            "select_layer": -1, "template": "internvl2_5", "use_thumbnail": True, "vision_config": vision,
            "use_backbone_lora": 0, "use_llm_lora": 0, "pad2square": False, "torch_dtype": "float32"}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every tensor a random value of a sensible scale (norm weights and layer scales around 1, biases and
    embeddings small), so that a wrong mapping of any tensor shows in the outputs. The LLM's residual projections
    shrink with depth so that a deep random stack still answers with varied tokens."""
    generator = torch.Generator().manual_seed(seed)
    depth = model.config.text_config.num_hidden_layers
    residual = min(1.0, 1.6 / depth ** 0.5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.startswith("model.language_model.") and name.endswith(("o_proj.weight", "down_proj.weight")):
                noise = noise * residual
            if name.endswith(("norm.weight", "layernorm_before.weight", "layernorm_after.weight", "layer_norm.weight",
                              "lambda_1", "lambda_2")):
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias") or "position_embeddings" in name or "cls_token" in name:
                param.copy_(0.05 * noise)
            elif param.ndim >= 2:
                param.copy_(noise / param.shape[-1] ** 0.5 if param.ndim == 2 else noise * 0.05)


def save_internvl_chat_checkpoint(path: str | Path, *, llm: str = "internlm2", num_layers: int = 4,
                                  hidden_size: int = 64, num_heads: int = 4, num_kv_heads: int = 2,
                                  intermediate_size: int = 128, vision_layers: int = 2, vision_hidden: int = 32,
                                  vision_heads: int = 2, image_size: int = 64, patch_size: int = 8,
                                  qk_normalization: bool = False, seed: int = 0) -> Path:
    """Write a tiny random InternVL2.5 checkpoint in the original on-disk layout to `path` and return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if llm == "internlm2":
        vocab_size = write_internlm2_tokenizer(path)
        bos, eos, pad = 1, 2, 2
    else:
        vocab_size = write_qwen2_tokenizer(path)
        from framefusion.models.internvl_chat.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path)
        bos, eos, pad = None, tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    raw = original_config(llm, vocab_size=vocab_size, num_layers=num_layers, hidden_size=hidden_size,
                          num_heads=num_heads, num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                          vision_layers=vision_layers, vision_hidden=vision_hidden, vision_heads=vision_heads,
                          image_size=image_size, patch_size=patch_size, qk_normalization=qk_normalization, bos=bos,
                          eos=eos, pad=pad)
    (path / "config.json").write_text(json.dumps(raw, indent=2))
    config = build_config(raw, image_token_id=0)  # the placeholder id does not shape any weight
    torch.manual_seed(seed)
    model = build_model(config, "eager")
    _randomize(model, seed)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in to_original(model.state_dict(), config).items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "pad_token_id": pad}, indent=2))
    return path
