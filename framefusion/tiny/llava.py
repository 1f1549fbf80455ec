"""Tiny LLaVA family models: LLaVA-OneVision (and HF-format LLaVA-Video), LLaVA-NeXT-Video."""

from __future__ import annotations

from framefusion.tiny.common import PATCH_SIZE, _config_kwargs, _text_kwargs, _vit_kwargs
from framefusion.tiny.tokenizer import special_token_ids


def _anyres_pinpoints(size: int) -> list[list[int]]:
    """Grid resolutions for LLaVA 'anyres' image tiling: up to 2x2 tiles of `size`."""
    return [[size * h, size * w] for h in (1, 2) for w in (1, 2)]


def _build_llava_onevision(dims, tokenizer, overrides):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    vision = _vit_kwargs(dims, vision_use_head=False)
    pinpoints = _anyres_pinpoints(dims.image_size)
    top = dict(
        **special_token_ids("llava", tokenizer),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = Qwen2Config(**kwargs["text_config"])
    kwargs["vision_config"] = SiglipVisionConfig(**kwargs["vision_config"])
    config = LlavaOnevisionConfig(**kwargs)
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=square),
        tokenizer=tokenizer,
        num_image_tokens=(dims.image_size // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_llava_next_video(dims, tokenizer, overrides):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    vision = _vit_kwargs(dims, projection_dim=dims.hidden_size)
    pinpoints = _anyres_pinpoints(dims.image_size)
    patches = (dims.image_size // PATCH_SIZE) ** 2
    top = dict(
        **special_token_ids("llava", tokenizer),
        vision_feature_select_strategy="default",  # drop CLIP's CLS token
        vision_feature_layer=-2 if dims.vision_layers > 1 else -1,
        image_grid_pinpoints=pinpoints,
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        image_seq_length=patches,
        video_seq_length=patches // 4,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = LlamaConfig(**kwargs["text_config"])
    kwargs["vision_config"] = CLIPVisionConfig(**kwargs["vision_config"])
    config = LlavaNextVideoConfig(**kwargs)
    edge = {"shortest_edge": dims.image_size}
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size=edge, crop_size=square),
        image_processor=LlavaNextImageProcessor(size=edge, crop_size=square, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=tokenizer.chat_template,
    )
    return config, processor
