"""Qwen2-VL: video tokens are <|video_pad|> runs; `video_grid_thw` gives (temporal patches, h, w) per video."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.core.patches import PatchStack
from framefusion.adapters.base import FamilyAdapter, split_sizes, token_positions
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos


class Qwen2VLAdapter(FamilyAdapter):
    """One grid frame is one temporal patch (temporal_patch_size sampled frames); P = (h / m) * (w / m)."""

    name = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    importance_queries = 4  # the authors' Qwen2-VL code averages the prune importance over the last 4 rows

    def vision_probe(self, model: nn.Module, patches: PatchStack):
        """Attention of the last full-attention block of the Qwen-VL vision transformer."""
        from framefusion.adapters.vision_attention import qwen_vit_probe

        return qwen_vit_probe(self.multimodal_module(model), patches)

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The (t, h, w) patch grid of every video."""
        grid_thw = arguments.get("video_grid_thw")
        return None if grid_thw is None else {"video_grid_thw": grid_thw}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Video tokens in prompt order, split per video by its grid; frames may be separated by text."""
        if not video:
            return None
        grid_thw = video["video_grid_thw"]
        config = module.config
        merge = config.vision_config.spatial_merge_size
        temporal = getattr(config.vision_config, "temporal_patch_size", 1)
        grids = [VideoGrid(int(t), int(h) // merge, int(w) // merge, temporal) for t, h, w in grid_thw.tolist()]
        positions = token_positions(input_ids, config.video_token_id)
        spans = split_sizes(positions, [g.frames * g.tokens_per_frame for g in grids], self.name)
        return layout_from_videos(input_ids.shape[-1], spans, grids)
