"""Tiny random LlavaQwen checkpoints (LLaVA-Video / LLaVA-OneVision) in LLaVA-NeXT's original on-disk format.

What a folder holds, as the lmms-lab checkpoints ship it: config.json with the original keys (model_type "llava",
architectures LlavaQwenForCausalLM, the mm_* keys), model.safetensors under the original names
(model.vision_tower.vision_tower.vision_model..., model.mm_projector..., model.image_newline, model.layers...,
lm_head.weight), and the Qwen2 tokenizer files (vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
tokenizer_config.json) of a small byte-level BPE trained here, its special tokens after the vocabulary as Qwen2's.

The SigLIP tower's own configuration lives in the repository `mm_vision_tower` names. `tower_cache` (a Hugging Face
hub cache folder) registers it there, with the tower's weights when `tower_weights` (LLaVA-NeXT's code loads them
before the checkpoint's); without it the loader falls back to so400m's published configuration with the sizes the
weights fix, which these checkpoints are built to agree with by default (16 vision heads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from framefusion.models.llava_next import LlavaQwenForVideo, save_original, tower_body
from framefusion.models.llava_next.configuration import build_config
from framefusion.models.llava_next.settings import settings_from_config
from framefusion.models.llava_next.vision_tower import SO400M_384
from framefusion.tiny.common import portable_weights
from framefusion.tiny.tokenizer import _CORPUS

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen2's, ids right after the BPE vocabulary
TOWER_NAME = "framefusion-tiny/siglip-tiny-patch8-64"
VIDEO_7B_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]


def write_qwen2_tokenizer(folder: Path, vocab_size: int = 400) -> int:
    """Train a byte-level BPE and write it as Qwen2's tokenizer files; returns the tokenizer's size."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(list(_CORPUS), trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(folder))  # vocab.json, merges.txt
    base = bpe.get_vocab_size()
    added = {token: base + i for i, token in enumerate(SPECIAL_TOKENS)}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>"}, indent=2) + "\n")
    decoder = {str(index): {"content": token, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True} for token, index in added.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 32768, "pad_token": "<|endoftext|>", "padding_side": "right",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}, indent=2) + "\n")
    return base + len(SPECIAL_TOKENS)


def original_config(tokens: int, *, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int,
                    intermediate_size: int, vision_hidden: int, vision_tower: str, **overrides: Any) -> dict[str, Any]:
    """A config.json with LLaVA-Video-7B-Qwen2's keys and tiny sizes (`overrides` replace any key)."""
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "add_faster_video": False,
        "add_time_instruction": True,
        "attention_dropout": 0.0,
        "bos_token_id": tokens - 3,
        "eos_token_id": tokens - 1,
        "faster_token_stride": 10,
        "force_sample": True,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "image_aspect_ratio": "anyres_max_9",
        "image_crop_resolution": None,
        "image_grid_pinpoints": VIDEO_7B_PINPOINTS,
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": 32768,
        "max_window_layers": num_layers,
        "mm_hidden_size": vision_hidden,
        "mm_newline_position": "grid",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_spatial_pool_stride": 2,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": vision_tower,
        "mm_vision_tower_lr": 2e-06,
        "num_attention_heads": num_heads,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": num_kv_heads,
        "pos_skipping_range": 4096,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_pos_skipping": False,
        "use_sliding_window": False,
        "vision_tower_pretrained": None,
        "vocab_size": tokens + 8,  # padded past the tokenizer, as the real 152064 rows are
    }
    config.update(overrides)
    return config


def write_tiny_llava_video(path: str | Path, *, num_layers: int = 4, hidden_size: int = 64, num_heads: int = 4,
                           num_kv_heads: int = 2, intermediate_size: int = 128, vision_layers: int = 1,
                           vision_hidden: int = 64, vision_heads: int = 16, vision_intermediate: int = 128,
                           image_size: int = 64, patch_size: int = 8, vision_tower: str = TOWER_NAME,
                           tower_cache: str | Path | None = None, tower_weights: bool = False, seed: int = 0,
                           **config_overrides: Any) -> Path:
    """Write a tiny random LlavaQwen checkpoint to `path` (see the module docstring) and return `path`.

    vision_layers: tower layers the checkpoint holds (its tower repository has one more, which LLaVA-NeXT drops).
    image_size / patch_size 384 / 14 give the real 27 x 27 grid (210 tokens per frame with grid newlines).
    """
    path = Path(path)
    tokens = write_qwen2_tokenizer(path)
    original = original_config(tokens, num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
                               num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                               vision_hidden=vision_hidden, vision_tower=vision_tower, **config_overrides)
    tower = {**SO400M_384, "hidden_size": vision_hidden, "intermediate_size": vision_intermediate,
             "num_hidden_layers": vision_layers + 1, "num_attention_heads": vision_heads, "image_size": image_size,
             "patch_size": patch_size}
    from transformers import SiglipVisionConfig

    settings = settings_from_config(original)
    vision = SiglipVisionConfig(**{**tower, "num_hidden_layers": vision_layers}, vision_use_head=False)
    config = build_config(original, settings, vision, "tiny", tokens, tokens + 1)
    torch.manual_seed(seed)
    model = LlavaQwenForVideo._from_config(config, dtype=torch.float32)
    portable_weights(model, seed, original["initializer_range"])
    save_original(model, path)
    if tower_cache is not None:
        register_tower(Path(tower_cache), vision_tower, tower, model if tower_weights else None, seed)
    return path


def register_tower(cache: Path, name: str, tower: dict[str, Any], model: LlavaQwenForVideo | None = None,
                   seed: int = 0) -> Path:
    """Put a tower repository (SigLIP config.json, and its weights when `model` is given) into a hub cache folder."""
    org_name = name.replace("/", "--")
    revision = "0" * 40
    snapshot = cache / f"models--{org_name}" / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (cache / f"models--{org_name}" / "refs").mkdir(exist_ok=True)
    (cache / f"models--{org_name}" / "refs" / "main").write_text(revision)
    config = {"architectures": ["SiglipModel"], "model_type": "siglip",
              "text_config": {"model_type": "siglip_text_model"},
              "vision_config": {**tower, "model_type": "siglip_vision_model"}}
    (snapshot / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if model is not None:  # every layer of the repository's tower: the checkpoint's, then one more at random
        body = tower_body(model.model.vision_tower)
        state = {f"vision_model.{k}": v.contiguous() for k, v in body.state_dict().items()}
        generator = torch.Generator().manual_seed(seed + 1)
        last = tower["num_hidden_layers"] - 1
        for key, value in list(state.items()):
            if key.startswith("vision_model.encoder.layers.0."):
                state[key.replace(".layers.0.", f".layers.{last}.")] = torch.randn(value.shape, generator=generator)
        save_file(state, str(snapshot / "model.safetensors"), metadata={"format": "pt"})
    return snapshot
