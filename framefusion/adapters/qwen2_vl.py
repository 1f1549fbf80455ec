"""Qwen2-VL: video tokens are <|video_pad|> runs; `video_grid_thw` gives (temporal patches, h, w) per video."""

from __future__ import annotations

from typing import Any

from torch import nn

from framefusion.adapters.base import FamilyAdapter, split_sizes, token_positions
from framefusion.layout import TokenLayout, VideoGrid, layout_from_videos


class Qwen2VLAdapter(FamilyAdapter):
    """One grid frame is one temporal patch (temporal_patch_size sampled frames); P = (h / m) * (w / m)."""

    name = "Qwen2-VL"
    model_types = ("qwen2_vl",)

    def token_layout(self, module: nn.Module, inputs: dict[str, Any]) -> TokenLayout | None:
        """Video tokens in prompt order, split per video by its grid; frames may be separated by text."""
        grid_thw = inputs.get("video_grid_thw")
        if grid_thw is None:
            return None
        config = module.config
        merge = config.vision_config.spatial_merge_size
        temporal = getattr(config.vision_config, "temporal_patch_size", 1)
        grids = [VideoGrid(int(t), int(h) // merge, int(w) // merge, temporal) for t, h, w in grid_thw.tolist()]
        positions = token_positions(inputs["input_ids"], config.video_token_id)
        spans = split_sizes(positions, [g.frames * g.tokens_per_frame for g in grids], self.name)
        return layout_from_videos(inputs["input_ids"].shape[-1], spans, grids)
