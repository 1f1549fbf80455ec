"""LLaVA-NeXT-Video: frames x pooled grid per video, no separator tokens."""

from __future__ import annotations

from torch import nn

from framefusion.adapters.llava_onevision import LlavaOneVisionAdapter
from framefusion.core.patches import PatchStack


class LlavaNextVideoAdapter(LlavaOneVisionAdapter):
    """Same reading as LLaVA-OneVision without the trailing newline token."""

    name = "LLaVA-NeXT-Video"
    model_types = ("llava_next_video",)
    newline_tokens = 0
    threshold_source = "the authors' LLaVA-NeXT-Video example (thu-nics/FrameFusion script/playground/example_llava.py)"

    def vision_probe(self, model: nn.Module, patches: PatchStack):
        """None: its CLIP tower (a CLS token, average pooling) is not read for saliency here."""
        return None
