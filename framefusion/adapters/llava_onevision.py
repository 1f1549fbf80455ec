"""LLaVA-OneVision (and HF-format LLaVA-Video): frames x pooled grid, then one newline token per video."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, split_sizes, token_positions
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack


class LlavaOneVisionAdapter(FamilyAdapter):
    """Video features are pooled 2x2 per frame; the trailing image_newline token is never reduced."""

    name = "LLaVA-OneVision"
    model_types = ("llava_onevision",)
    newline_tokens = 1  # separator tokens at the end of each video's span
    similarity_threshold = 0.6
    threshold_source = ("the paper's value for the LLaVA-Video series (appendix on hyperparameters); "
                        "LLaVA-OneVision shares their vision tower and LLM")

    def vision_probe(self, model: nn.Module, patches: PatchStack):
        """Attention of the SigLIP layer that gives the video features, pooled like them."""
        from framefusion.adapters.vision_attention import siglip_probe

        return siglip_probe(self.multimodal_module(model), patches)

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """How many videos, and frames per video ([videos, frames, C, H, W] pixels)."""
        pixels = arguments.get("pixel_values_videos")
        return None if pixels is None else {"videos": int(pixels.shape[0]), "frames": int(pixels.shape[1])}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Split the <video> tokens per video; each span is frames x P grid tokens plus the separators."""
        if not video:
            return None
        num_videos, frames = video["videos"], video["frames"]
        positions = token_positions(input_ids, module.config.video_token_id)
        if num_videos == 0 or positions.numel() % num_videos:
            raise ValueError(f"{self.name}: {positions.numel()} video tokens for {num_videos} videos")
        per_video = positions.numel() // num_videos
        side = math.isqrt((per_video - self.newline_tokens) // frames)
        grid = VideoGrid(frames, side, side)
        spans = split_sizes(positions, [per_video] * num_videos, self.name)
        spans = [span[: span.numel() - self.newline_tokens] for span in spans]
        return layout_from_videos(input_ids.shape[-1], spans, [grid] * num_videos)
