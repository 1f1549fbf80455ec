"""InternVL (HF-native): each video frame is one image tile "FrameN: <img><IMG_CONTEXT>*P</img>"."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, token_positions
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos

MAX_FRAME_GAP = 16  # text tokens allowed between two frames of one video ("\nFrame12: <img>")


class InternVLAdapter(FamilyAdapter):
    """The processor turns a video into single-tile image blocks; a video is a run of two or more of them.

    InternVL's inputs carry no video marker (videos arrive as `pixel_values` like images). Frames of one
    video are close together and preceded by the same token (the end of "FrameN: "); an image before the
    video is preceded by other text and stays apart. Single-tile images written back to back with the same
    label pattern ("Image-1: <image>\nImage-2: <image>") cannot be told from a video and are read as one.
    """

    name = "InternVL"
    model_types = ("internvl",)
    similarity_threshold = 0.5
    threshold_source = ("the authors' InternVL2.5 example (thu-nics/FrameFusion script/playground/example_internvl.py)"
                        "; no published value for the transformers-native InternVL checkpoints")

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Find the runs of single-tile blocks and read each as a video of one frame per block."""
        config = module.config
        per_tile = int(config.image_seq_length)
        positions = token_positions(input_ids, config.image_token_id)
        if positions.numel() == 0:
            return None
        blocks = torch.tensor_split(positions, (torch.nonzero(positions.diff() != 1).flatten() + 1).tolist())
        side = math.isqrt(per_tile)
        ids = input_ids[0].cpu()
        videos: list[list[torch.Tensor]] = []
        current: list[torch.Tensor] = []
        for block in blocks:  # a loop over image blocks (frames), not over tokens
            single = block.numel() == per_tile
            label = int(ids[block[0] - 2]) if block[0] >= 2 else -1  # the token before "<img>"
            joins = (bool(current) and int(block[0] - current[-1][-1]) <= MAX_FRAME_GAP
                     and label == int(ids[current[0][0] - 2]))
            if single and joins:
                current.append(block)
                continue
            if len(current) >= 2:
                videos.append(current)
            current = [block] if single else []
        if len(current) >= 2:
            videos.append(current)
        if not videos:
            return None
        spans = [torch.cat(frames) for frames in videos]
        grids = [VideoGrid(len(frames), side, side) for frames in videos]
        return layout_from_videos(input_ids.shape[-1], spans, grids)
