"""Tiny Qwen-VL family models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL."""

from __future__ import annotations

from typing import Any

from framefusion.tiny.common import MERGE_SIZE, PATCH_SIZE, _config_kwargs, _Dims, _mrope_section, _text_kwargs
from framefusion.tiny.tokenizer import special_token_ids


def _qwen_sizes(dims: _Dims) -> dict[str, Any]:
    """Image/video processor sizes: at most image_size**2 pixels per frame, at least 2x2 tokens."""
    factor = PATCH_SIZE * MERGE_SIZE
    return dict(
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": dims.image_size**2},
    )


def _qwen_vit_kwargs(dims: _Dims, **extra: Any) -> dict[str, Any]:
    """The Qwen2.5-VL / Qwen3-VL / Qwen3.5 vision config (Qwen2-VL's names differ): widths, patches, merge."""
    return dict(depth=dims.vision_layers, hidden_size=dims.hidden_size, intermediate_size=2 * dims.hidden_size,
                num_heads=dims.num_heads, out_hidden_size=dims.hidden_size, patch_size=PATCH_SIZE,
                spatial_merge_size=MERGE_SIZE, temporal_patch_size=2, **extra)


def _qwen2_rope(dims: _Dims) -> dict[str, Any]:
    """Qwen2-VL / 2.5-VL rotary parameters: M-RoPE over (t, h, w) sections, not interleaved."""
    return {"rope_type": "default", "rope_theta": 1e6,
            "mrope_section": _mrope_section(dims.head_dim, interleaved=False)}


def _qwen2_processor(processor_class: Any, dims: _Dims, tokenizer: Any) -> Any:
    """The Qwen2-VL / 2.5-VL processor: Qwen2-VL image and video processors at the tiny sizes."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = _qwen_sizes(dims)
    return processor_class(
        image_processor=Qwen2VLImageProcessor(**sizes),
        video_processor=Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def _qwen3_processor(dims: _Dims, tokenizer: Any) -> Any:
    """The Qwen3-VL processor (Qwen3.5 uses it too): mean/std 0.5, pixels bounded per clip (up to 64 frames)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    sizes = _qwen_sizes(dims)
    half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    # Qwen3-VL bounds the pixels of the whole clip (t*h*w): here up to 64 frames of image_size**2
    video_sizes = {**sizes, "size": {**sizes["size"], "longest_edge": 64 * dims.image_size**2}}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes, **half),
        video_processor=Qwen3VLVideoProcessor(**video_sizes, **half, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def _build_qwen2_vl(dims, tokenizer, overrides):
    from transformers import Qwen2VLConfig, Qwen2VLProcessor

    text = {**_text_kwargs(dims, tokenizer), "rope_parameters": _qwen2_rope(dims)}
    vision = dict(
        depth=dims.vision_layers,
        embed_dim=dims.hidden_size,
        hidden_size=dims.hidden_size,  # merger output = LLM width
        num_heads=dims.num_heads,
        mlp_ratio=2,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(**_config_kwargs(text, vision, special_token_ids("qwen2_vl", tokenizer), overrides))
    return config, _qwen2_processor(Qwen2VLProcessor, dims, tokenizer)


def _build_qwen2_5_vl(dims, tokenizer, overrides):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    text = {**_text_kwargs(dims, tokenizer), "rope_parameters": _qwen2_rope(dims)}
    vision = _qwen_vit_kwargs(
        dims,
        window_size=4 * PATCH_SIZE * MERGE_SIZE,  # 4x4 merged tokens per attention window
        fullatt_block_indexes=[dims.vision_layers - 1],
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(**_config_kwargs(text, vision, special_token_ids("qwen2_vl", tokenizer), overrides))
    return config, _qwen2_processor(Qwen2_5_VLProcessor, dims, tokenizer)


def _build_qwen3_vl(dims, tokenizer, overrides):
    from transformers import Qwen3VLConfig

    text = _text_kwargs(dims, tokenizer)
    for key in ("bos_token_id", "eos_token_id", "tie_word_embeddings"):
        text.pop(key)
    text["head_dim"] = dims.head_dim
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": _mrope_section(dims.head_dim, interleaved=True),
        "mrope_interleaved": True,
    }
    vision = _qwen_vit_kwargs(
        dims,
        num_position_embeddings=16**2,  # learned 16x16 grid, interpolated to each frame's grid
        deepstack_visual_indexes=list(range(min(3, dims.vision_layers))),
    )
    config = Qwen3VLConfig(**_config_kwargs(text, vision, special_token_ids("qwen2_vl", tokenizer), overrides))
    return config, _qwen3_processor(dims, tokenizer)
