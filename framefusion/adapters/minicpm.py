"""MiniCPM-V 4.6 and 4.7: SigLIP tokens merged 4x4 (16x mode) or 2x2 (4x mode) per unit, a Qwen3.5 hybrid decoder.

Each sampled frame is a thumbnail unit "<image>V*n</image>", in slice mode followed by its slices
"<slice>V*m</slice>" (rows joined by a newline); each video is prefixed "<image_id>k</image_id>".
`target_sizes_videos` gives every unit's (h, w) in patches, in prompt order; a unit's tokens are its
(h/d) x (w/d) grid, row-major (d = 4, or 2 in 4x mode). The layout reads each video's thumbnails as one token
stream and each slice position (slice 1, 2, ... of every frame) as another, so a token is compared with the same
patch of the same unit in the previous frame. Frames of one video are units separated only by their end and
start markers; a longer gap (the "<image_id>" prefix) starts a new video. Without image ids, two videos written
back to back with the same unit structure would read as one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, token_positions
from framefusion.adapters.hybrid import HybridDecoderMixin
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos

FRAME_GAP = 2  # tokens between the last unit of a frame and the next frame's thumbnail: "</image><image>"


class MiniCPMV4_6Adapter(HybridDecoderMixin, FamilyAdapter):
    """Video tokens by unit runs and `target_sizes_videos`; prune steps only after full-attention layers."""

    name = "MiniCPM-V 4.6"
    model_types = ("minicpmv4_6",)
    similarity_threshold = 0.7
    threshold_source = ("no published value: MiniCPM-V 2.6's, the paper's (appendix on hyperparameters; run "
                        "framefusion calibrate for this model)")

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """Every video unit's size in patches, and the downsampling mode."""
        sizes = arguments.get("target_sizes_videos")
        return None if sizes is None else {"target_sizes_videos": sizes,
                                           "downsample_mode": arguments.get("downsample_mode")}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Group the unit runs into frames and videos; one token stream per (video, unit kind)."""
        if not video:
            return None
        positions = token_positions(input_ids, module.config.video_token_id)
        if positions.numel() == 0:
            return None
        mode = video.get("downsample_mode") or module.config.downsample_mode
        side = 2 if mode == "4x" else 4  # patches per token side
        sizes = (torch.as_tensor(video["target_sizes_videos"]).reshape(-1, 2).cpu() // side).tolist()  # [units, 2]
        runs = torch.tensor_split(positions, (torch.nonzero(positions.diff() != 1).flatten() + 1).tolist())
        if len(runs) != len(sizes) or any(run.numel() != h * w for run, (h, w) in zip(runs, sizes)):
            raise ValueError(f"{self.name}: the prompt's {len(runs)} video token runs do not match the "
                             f"{len(sizes)} video units of target_sizes_videos")
        ids = input_ids[0].cpu()
        thumbnail_marker = int(ids[runs[0][0] - 1])  # the token before a unit: "<image>" for a thumbnail
        videos: list[list[list[int]]] = []  # video -> frame -> unit indices
        for unit, run in enumerate(runs):  # a loop over units (frames and slices), not over tokens
            if int(ids[run[0] - 1]) != thumbnail_marker:
                videos[-1][-1].append(unit)  # a slice of the current frame
            elif unit > 0 and int(run[0] - runs[unit - 1][-1]) - 1 == FRAME_GAP:
                videos[-1].append([unit])  # the next frame of the same video
            else:
                videos.append([[unit]])
        spans, grids = [], []
        for frames in videos:
            shapes = {tuple(tuple(sizes[u]) for u in frame) for frame in frames}
            if len(shapes) != 1:
                raise ValueError(f"{self.name}: the frames of one video have different unit sizes {sorted(shapes)}")
            for kind, (rows, cols) in enumerate(shapes.pop()):  # the thumbnail stream, then each slice position
                spans.append(torch.cat([runs[frame[kind]] for frame in frames]))
                grids.append(VideoGrid(len(frames), rows, cols))
        return layout_from_videos(input_ids.shape[-1], spans, grids)


class MiniCPMV4_7Adapter(MiniCPMV4_6Adapter):
    """MiniCPM-V 4.7: 4.6's vision tower, prompt layout and decoder, with 3-D (canvas) M-RoPE positions, which the
    engine slices like any other position ids."""

    name = "MiniCPM-V 4.7"
    model_types = ("minicpmv4_7",)
