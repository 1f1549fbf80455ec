"""LLaVA-NeXT-Video: frames x pooled grid per video, no separator tokens."""

from __future__ import annotations

from framefusion.adapters.llava_onevision import LlavaOneVisionAdapter


class LlavaNextVideoAdapter(LlavaOneVisionAdapter):
    """Same reading as LLaVA-OneVision without the trailing newline token."""

    name = "LLaVA-NeXT-Video"
    model_types = ("llava_next_video",)
    newline_tokens = 0
