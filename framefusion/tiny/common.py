"""Sizes and config pieces shared by the tiny families' builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

PATCH_SIZE = 8  # vision patch side of every tiny model (the real models use 14 or 16)
MERGE_SIZE = 2  # Qwen-VL spatial merge (2x2 patches -> 1 token), as in the real models


@dataclass(frozen=True)
class _Dims:
    """Sizes shared by every family's config."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vision_layers: int
    image_size: int

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads


def _text_kwargs(dims: _Dims, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Decoder sizes and special ids common to the Qwen2 / Llama style text configs."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        max_position_embeddings=32768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _mrope_section(head_dim: int, interleaved: bool) -> list[int]:
    """Split the head_dim/2 rotary frequencies over (t, h, w) in the proportions of the real models."""
    half = head_dim // 2
    if interleaved:  # Qwen3-VL: [24, 20, 20] of 64
        hw = half * 20 // 64
        return [half - 2 * hw, hw, hw]
    hw = (half - half // 4) // 2  # Qwen2-VL / 2.5-VL: [16, 24, 24] of 64
    return [half - 2 * hw, hw, hw]


def _config_kwargs(
    text: dict[str, Any], vision: dict[str, Any], top: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Top-level config kwargs; `overrides` wins, its text_config / vision_config dicts update the sub-configs."""
    overrides = dict(overrides)
    text = {**text, **overrides.pop("text_config", {})}
    vision = {**vision, **overrides.pop("vision_config", {})}
    return {**top, **overrides, "text_config": text, "vision_config": vision}


def _vit_kwargs(dims: _Dims, **extra: Any) -> dict[str, Any]:
    """A tiny ViT vision config (SigLIP, CLIP and InternViT take the same names)."""
    return dict(hidden_size=dims.hidden_size, intermediate_size=2 * dims.hidden_size,
                num_hidden_layers=dims.vision_layers, num_attention_heads=dims.num_heads, patch_size=PATCH_SIZE,
                image_size=dims.image_size, **extra)


def portable_weights(model: torch.nn.Module, seed: int, std: float) -> None:
    """Redraw every weight matrix and kernel from numpy's generator, so a tiny checkpoint is bit-identical on every
    torch and transformers release (their init functions differ: torch 2.7 and 2.13 draw SigLIP's patch convolution
    differently). Matrices and embeddings: normal(0, std), as transformers initialises them; convolution kernels:
    LeCun normal (std 1 / sqrt(fan_in)), as SigLIP does. Biases and norms keep their constant init."""
    rng = np.random.default_rng([seed, 2024])
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() < 2:
                continue
            scale = std if parameter.dim() == 2 else (parameter[0].numel()) ** -0.5
            values = rng.standard_normal(tuple(parameter.shape), dtype=np.float32) * np.float32(scale)
            parameter.copy_(torch.from_numpy(values).to(parameter.dtype))
