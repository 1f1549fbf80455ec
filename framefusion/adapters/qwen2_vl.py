"""Qwen2-VL: video tokens are <|video_pad|> runs; `video_grid_thw` gives (temporal patches, h, w) per video."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, split_sizes, token_positions
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack
from framefusion.core.positions import install_published_positions


class Qwen2VLAdapter(FamilyAdapter):
    """One grid frame is one temporal patch (temporal_patch_size sampled frames); P = (h / m) * (w / m)."""

    name = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    importance_queries = 4  # the authors' Qwen2-VL code averages the prune importance over the last 4 rows
    frames_in_own_spans = False  # Qwen3-VL, Qwen3.5: each frame is its own vision span after a timestamp
    similarity_threshold = 0.5
    threshold_source = ("the authors' value (thu-nics/FrameFusion script/playground/example_qwen2vl.py, confirmed by "
                        "the maintainers in their issue 13)")

    def vision_probe(self, model: nn.Module, patches: PatchStack):
        """Attention of the last full-attention block of the Qwen-VL vision transformer."""
        from framefusion.adapters.vision_attention import qwen_vit_probe

        return qwen_vit_probe(self.multimodal_module(model), patches)

    def install_positions(self, model: nn.Module, patches: PatchStack) -> None:
        """The published M-RoPE rule for text after a video (core/positions.py), where this transformers departs."""
        module = self.multimodal_module(model)
        config = module.config
        install_published_positions(module, patches, self.position_probe(config),
                                    (config.image_token_id, config.video_token_id))

    def position_probe(self, config: Any) -> dict[str, Any]:
        """get_rope_index arguments of a prompt text + video + text whose video has 4 temporal steps of 2 x 2 tokens
        (Qwen3-VL, Qwen3.5: each frame in its own span after a timestamp, as their processors write it)."""
        merge = config.vision_config.spatial_merge_size
        text, video = config.vision_start_token_id, config.video_token_id
        spans = [4] * 4 if self.frames_in_own_spans else [16]
        ids, types = [text] * 3, [0] * 3
        for tokens in spans:
            ids += [text] * 2 + [video] * tokens
            types += [0] * 2 + [2] * tokens
        ids, types = ids + [text] * 3, types + [0] * 3
        return {"input_ids": torch.tensor([ids]), "mm_token_type_ids": torch.tensor([types]),
                "image_grid_thw": None, "video_grid_thw": torch.tensor([[4, 2 * merge, 2 * merge]]),
                "attention_mask": None}

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
