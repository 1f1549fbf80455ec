"""Tiny random checkpoints of the supported video-LLM families, for tests, examples and benchmarks.

Every model is the stock Hugging Face class with a tiny config and random weights; every processor is
the family's real processor class, built from local objects only (a BPE tokenizer trained here, small
image/video sizes). Nothing is downloaded. One builder module per family group: qwen.py, llava.py,
internvl.py, hybrid.py (Qwen3.5, MiniCPM-V 4.6); tokenizer.py and common.py hold what they share. Checkpoints in an
original, non-transformers format are written to disk in that format: llava_next.py (write_tiny_llava_video).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PreTrainedTokenizerFast

from framefusion.tiny.common import MERGE_SIZE, PATCH_SIZE, _Dims
from framefusion.tiny.hybrid import _build_minicpmv4_6, _build_minicpmv4_7, _build_qwen3_5
from framefusion.tiny.internvl import _build_internvl
from framefusion.tiny.llava import _build_llava_next_video, _build_llava_onevision
from framefusion.tiny.llava_next import write_tiny_llava_video
from framefusion.tiny.qwen import _build_qwen2_5_vl, _build_qwen2_vl, _build_qwen3_vl
from framefusion.tiny.tokenizer import build_tokenizer as _build_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "llava_next_video", "internvl", "qwen3_5",
            "minicpmv4_6", "minicpmv4_7")
__all__ = ["FAMILIES", "MERGE_SIZE", "PATCH_SIZE", "build_tiny_model", "build_tokenizer", "model_class",
           "save_tiny_checkpoint", "write_tiny_llava_video"]


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 512,
                    family: str = "qwen2_vl") -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE with `family`'s special tokens and chat template."""
    return _build_tokenizer(corpus, vocab_size, _check_family(family))


@dataclass(frozen=True)
class _Family:
    """How to build one family: its model class name, default image size and config/processor builder."""

    model_class: str
    image_size: int  # Qwen-VL: max frame side (dynamic resolution); others: the vision tower's input side
    build: Callable[[_Dims, PreTrainedTokenizerFast, dict[str, Any]], tuple[Any, Any]]  # -> (config, processor)


_FAMILY_TABLE = {
    "qwen2_vl": _Family("Qwen2VLForConditionalGeneration", 112, _build_qwen2_vl),
    "qwen2_5_vl": _Family("Qwen2_5_VLForConditionalGeneration", 112, _build_qwen2_5_vl),
    "qwen3_vl": _Family("Qwen3VLForConditionalGeneration", 112, _build_qwen3_vl),
    "llava_onevision": _Family("LlavaOnevisionForConditionalGeneration", 64, _build_llava_onevision),
    "llava_next_video": _Family("LlavaNextVideoForConditionalGeneration", 64, _build_llava_next_video),
    "internvl": _Family("InternVLForConditionalGeneration", 64, _build_internvl),
    "qwen3_5": _Family("Qwen3_5ForConditionalGeneration", 112, _build_qwen3_5),
    "minicpmv4_6": _Family("MiniCPMV4_6ForConditionalGeneration", 128, _build_minicpmv4_6),
    "minicpmv4_7": _Family("MiniCPMV4_7ForConditionalGeneration", 128, _build_minicpmv4_7),
}


def _check_family(family: str) -> str:
    """`family`, or a ValueError naming the supported ones."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return family


def model_class(family: str) -> type:
    """The Hugging Face model class of `family`."""
    import transformers

    return getattr(transformers, _FAMILY_TABLE[_check_family(family)].model_class)


def build_tiny_model(
    family: str,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_layers: int = 1,
    image_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    **config_overrides: Any,
) -> tuple[torch.nn.Module, Any]:
    """Build a randomly initialised `family` model (eval mode) and its real processor class."""
    # image_size: Qwen-VL max frame side (default 112; smaller frames keep their size), else the vision
    # tower's input side (default 64). config_overrides go to the top-level config; text_config={...}
    # and vision_config={...} update the sub-config keyword arguments.
    spec = _FAMILY_TABLE[_check_family(family)]
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads and num_heads by num_kv_heads")
    dims = _Dims(
        num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size, vision_layers, image_size or spec.image_size
    )
    if dims.image_size % (PATCH_SIZE * MERGE_SIZE):
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE * MERGE_SIZE}")
    tokenizer = build_tokenizer(family=family)
    config, processor = spec.build(dims, tokenizer, dict(config_overrides))

    torch.manual_seed(seed)
    model = model_class(family)._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), processor


def save_tiny_checkpoint(family: str, path: str | Path, **kw: Any) -> Path:
    """Build a tiny `family` model and save model + processor to `path` for offline from_pretrained."""
    path = Path(path)
    model, processor = build_tiny_model(family, **kw)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
