"""Tiny hybrid-decoder models: Qwen3.5 and MiniCPM-V 4.6 / 4.7 (Gated DeltaNet layers with attention every 4th layer)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerFast

from framefusion.tiny.common import PATCH_SIZE, _config_kwargs, _Dims, _mrope_section, _text_kwargs, _vit_kwargs
from framefusion.tiny.qwen import _qwen3_processor, _qwen_vit_kwargs
from framefusion.tiny.tokenizer import special_token_ids

FULL_ATTENTION_INTERVAL = 4  # as the real checkpoints: layers 3, 7, 11, ... attend, the others are linear
ROTARY_SHARE = 0.5  # partial rotary: the real models turn 64 of 256 channels; here half of each head


def hybrid_layer_types(num_layers: int, interval: int = FULL_ATTENTION_INTERVAL) -> list[str]:
    """Qwen3.5's pattern: every `interval`-th layer full attention, the rest linear attention."""
    return ["full_attention" if (layer + 1) % interval == 0 else "linear_attention" for layer in range(num_layers)]


def _hybrid_text_kwargs(dims: _Dims, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """A Qwen3.5 text config: linear-attention widths, the hybrid layer pattern, interleaved partial M-RoPE."""
    text = _text_kwargs(dims, tokenizer)
    for key in ("bos_token_id", "tie_word_embeddings"):
        text.pop(key)
    rotary = int(dims.head_dim * ROTARY_SHARE)
    text.update(
        head_dim=dims.head_dim,
        linear_num_key_heads=dims.num_kv_heads,
        linear_num_value_heads=dims.num_heads,
        linear_key_head_dim=dims.head_dim,
        linear_value_head_dim=dims.head_dim,
        linear_conv_kernel_dim=4,
        layer_types=hybrid_layer_types(dims.num_layers),
        rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": ROTARY_SHARE,
                         "mrope_section": _mrope_section(rotary, interleaved=True), "mrope_interleaved": True},
    )
    return text


def _build_qwen3_5(dims, tokenizer, overrides):
    from transformers import Qwen3_5Config

    vision = _qwen_vit_kwargs(dims, num_position_embeddings=16**2)
    top = {**special_token_ids("qwen3_5", tokenizer), "tie_word_embeddings": False}
    config = Qwen3_5Config(**_config_kwargs(_hybrid_text_kwargs(dims, tokenizer), vision, top, overrides))
    return config, _qwen3_processor(dims, tokenizer)  # Qwen3.5's processor class is Qwen3-VL's


def _build_minicpmv4_6(dims, tokenizer, overrides, version: str = "4_6"):
    import transformers
    from transformers import MiniCPMV4_6ImageProcessor, MiniCPMV4_6VideoProcessor  # 4.7 uses 4.6's processors

    config_class = getattr(transformers, f"MiniCPMV{version}Config")
    processor_class = getattr(transformers, f"MiniCPMV{version}Processor")
    overrides = dict(overrides)
    slice_mode = overrides.pop("video_slice_mode", False)  # frames larger than image_size**2 get slices
    text = {**_hybrid_text_kwargs(dims, tokenizer), "model_type": "qwen3_5_text"}
    vision = _vit_kwargs(dims)
    top = dict(insert_layer_id=0, image_size=dims.image_size, tie_word_embeddings=False,
               **special_token_ids(f"minicpmv{version}", tokenizer))
    config = config_class(**_config_kwargs(text, vision, top, overrides))
    sizes = dict(patch_size=PATCH_SIZE, scale_resolution=dims.image_size, max_slice_nums=4)
    processor = processor_class(
        image_processor=MiniCPMV4_6ImageProcessor(**sizes),
        video_processor=MiniCPMV4_6VideoProcessor(**sizes, slice_mode=slice_mode),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_minicpmv4_7(dims, tokenizer, overrides):
    return _build_minicpmv4_6(dims, tokenizer, overrides, version="4_7")
