"""Tiny InternVL (HF-native) model."""

from __future__ import annotations

from framefusion.tiny.common import PATCH_SIZE, _config_kwargs, _text_kwargs, _vit_kwargs
from framefusion.tiny.tokenizer import special_token_ids


def _build_internvl(dims, tokenizer, overrides):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    vision = _vit_kwargs(dims)
    image_seq_length = (dims.image_size // PATCH_SIZE) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5
    top = dict(
        **special_token_ids("internvl", tokenizer),
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = Qwen2Config(**kwargs["text_config"])
    kwargs["vision_config"] = InternVLVisionConfig(**kwargs["vision_config"])
    config = InternVLConfig(**kwargs)
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=square, crop_to_patches=True, min_patches=1, max_patches=4),
        video_processor=InternVLVideoProcessor(size=square),
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=tokenizer.chat_template,
    )
    return config, processor
