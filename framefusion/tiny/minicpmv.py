"""Tiny random MiniCPM-V 2.6 checkpoints in the original remote-code layout, for tests and the oracle harness.

The folder holds what openbmb/MiniCPM-V-2_6 holds, at tiny sizes: config.json (architectures ["MiniCPMV"],
model_type "minicpmv", version 2.6, the flat Qwen2 keys, vision_config, slice_config), preprocessor_config.json,
the tokenizer (tokenizer.json and a tokenizer_config.json naming MiniCPMVTokenizerFast, with Qwen2's ChatML
template) and model.safetensors under the original names (vpm.*, resampler.*, llm.model.*, llm.lm_head.weight).
The weights come from a seeded generator in name order, not from any library's initialiser, so one seed gives the
same checkpoint on every transformers version. The remote-code .py files are not written (nothing of them is here).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from framefusion.tiny.tokenizer import build_tokenizer

PATCH = 14  # MiniCPM-V 2.6's patch size (kept: the 70 x 70 NaViT position table is the real one)
POSITION_SIDE = 70  # vision image_size 980 / patch 14
AUTO_MAP = {"AutoConfig": "configuration_minicpm.MiniCPMVConfig", "AutoModel": "modeling_minicpmv.MiniCPMV",
            "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"}


@dataclass(frozen=True)
class TinyMiniCPMV:
    """Sizes of a tiny MiniCPM-V 2.6 (the resampler has hidden_size // 128 heads, so hidden_size >= 128)."""

    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_hidden: int = 64
    vision_heads: int = 2
    vision_layers: int = 2
    query_num: int = 16  # the real model: 64 LLM tokens per slice
    scale_resolution: int = 56  # the real model: 448 (a 56 x 56 frame is one slice of 4 x 4 patches here)
    seed: int = 0


def original_config(sizes: TinyMiniCPMV, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    """config.json as the original has it (keys and layout of openbmb/MiniCPM-V-2_6), at the tiny sizes."""
    return {
        "_name_or_path": "openbmb/MiniCPM-V-2_6",
        "architectures": ["MiniCPMV"],
        "attention_dropout": 0.0,
        "auto_map": AUTO_MAP,
        "batch_vision_input": True,
        "bos_token_id": bos_id,
        "drop_vision_last_layer": False,
        "eos_token_id": eos_id,
        "hidden_act": "silu",
        "hidden_size": sizes.hidden_size,
        "image_size": sizes.scale_resolution,
        "initializer_range": 0.02,
        "intermediate_size": sizes.intermediate_size,
        "max_position_embeddings": 32768,
        "max_window_layers": sizes.num_layers,
        "model_type": "minicpmv",
        "num_attention_heads": sizes.num_heads,
        "num_hidden_layers": sizes.num_layers,
        "num_key_value_heads": sizes.num_kv_heads,
        "patch_size": PATCH,
        "query_num": sizes.query_num,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "slice_config": {"max_slice_nums": 9, "model_type": "minicpmv"},
        "slice_mode": True,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.40.0",
        "use_cache": True,
        "use_image_id": True,
        "use_sliding_window": False,
        "version": 2.6,
        "vision_batch_size": 16,
        "vision_config": {"hidden_size": sizes.vision_hidden, "image_size": POSITION_SIDE * PATCH,
                          "intermediate_size": 2 * sizes.vision_hidden, "model_type": "siglip",
                          "num_attention_heads": sizes.vision_heads, "num_hidden_layers": sizes.vision_layers,
                          "patch_size": PATCH},
        "vocab_size": vocab_size,
    }


def preprocessor_config(sizes: TinyMiniCPMV) -> dict:
    """preprocessor_config.json as the original has it, at the tiny scale resolution and query count."""
    return {
        "image_processor_type": "MiniCPMVImageProcessor",
        "auto_map": {"AutoProcessor": "processing_minicpmv.MiniCPMVProcessor",
                     "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor"},
        "processor_class": "MiniCPMVProcessor",
        "max_slice_nums": 9,
        "scale_resolution": sizes.scale_resolution,
        "patch_size": PATCH,
        "use_image_id": True,
        "image_feature_size": sizes.query_num,
        "im_start": "<image>",
        "im_end": "</image>",
        "slice_start": "<slice>",
        "slice_end": "</slice>",
        "unk": "<unk>",
        "im_id_start": "<image_id>",
        "im_id_end": "</image_id>",
        "slice_mode": True,
        "norm_mean": [0.5, 0.5, 0.5],
        "norm_std": [0.5, 0.5, 0.5],
        "version": 2.6,
    }


def _parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Original name -> shape of every weight the config describes (read off the model built on the meta device)."""
    from framefusion.models.minicpmv import build_model, parse_config
    from framefusion.models.minicpmv.weights import to_original

    model = build_model(parse_config(config), dtype=torch.float32)
    return {to_original(name): tuple(p.shape) for name, p in model.named_parameters()}


def _random_weight(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A weight with activations of order one: matrices scaled by 1 / sqrt(fan-in), norms near 1, small biases."""
    noise = torch.randn(shape, generator=generator)
    leaf = name.rsplit(".", 1)[-1]
    is_norm = any(part in name for part in ("norm", "ln_", "layer_norm"))
    if leaf.endswith("bias"):
        return 0.1 * noise
    if is_norm and len(shape) == 1:
        return 1.0 + 0.1 * noise
    if name.endswith(("embed_tokens.weight", "position_embedding.weight", "resampler.query")):
        return noise
    fan_in = shape[0] if name.endswith("resampler.proj") else int(torch.tensor(shape[1:]).prod())
    return noise / fan_in**0.5


def tokenizer_config(tokenizer, chat_template: str) -> dict:
    """tokenizer_config.json as the original's (MiniCPMVTokenizerFast by auto_map, Qwen2's ChatML template)."""
    added = {str(token_id): {"content": token.content, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
             for token_id, token in sorted(tokenizer.added_tokens_decoder.items())}
    return {
        "added_tokens_decoder": added,
        "auto_map": {"AutoTokenizer": ["tokenization_minicpmv_fast.MiniCPMVTokenizerFast", None]},
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "MiniCPMVTokenizerFast",
        "unk_token": "<unk>",
    }


def save_tiny_minicpmv2_6(path: str | Path, sizes: TinyMiniCPMV = TinyMiniCPMV()) -> Path:
    """Write a tiny random MiniCPM-V 2.6 checkpoint in the original layout to `path`; returns the folder."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family="minicpmv2_6")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = original_config(sizes, len(tokenizer), tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos)
    generator = torch.Generator().manual_seed(sizes.seed)
    weights = {name: _random_weight(name, shape, generator)
               for name, shape in sorted(_parameter_shapes(config).items())}
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(sizes), indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": config["bos_token_id"],
                                                             "eos_token_id": eos}, indent=2) + "\n")
    tokenizer.backend_tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tokenizer, tokenizer.chat_template),
                                                           indent=2) + "\n")
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                                              "unk_token": "<unk>"}, indent=2) + "\n")
    (path / "tiny_sizes.json").write_text(json.dumps(asdict(sizes), indent=2) + "\n")  # how it was built
    return path
