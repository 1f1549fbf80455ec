"""MiniCPM-V 2.6 (original format, framefusion.models.minicpmv): each frame is query_num resampled tokens per slice.

A video's frames are image items of the prompt: "<image>" + Q "<unk>" + "</image>" (then "<slice>" + Q "<unk>" +
"</slice>" per slice for a frame larger than the scale resolution), frames separated by a newline. The processor
says which placeholder runs are video slices (`slice_video`) and each video's (frames, slices per frame)
(`video_shape`). A frame's video tokens are its slices' Q tokens each: a grid of slices x Q, so a token is compared
with the same query of the same slice in the previous frame. The queries have no spatial order of their own.

FrameFusion, as the authors run it on this model (thu-nics/FrameFusion, models/minicpmv), takes a frame's unit
to be everything from its first "<unk>" to the next frame's first "<unk>": the Q queries plus the separators
("</image>", the newline, the next "<image>"; with slices, their markers too), 67 tokens for a 448 x 448 frame,
the last frame ending two tokens after its last "<unk>" (66). The separators then merge and prune like video tokens
(identical ones merge at the first step), and the budget counts them. With FrameFusion installed the layout is
that unit, so the per-layer counts are the authors'; every other method (and dense) sees the Q-token frames.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, token_positions
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack

AUTHORS_UNIT = "_framefusion_authors_frame_unit"  # set on the multimodal module while FrameFusion is installed
REDUCING = "_framefusion_reducing"  # set on it while any reduction is installed
SEPARATORS_AFTER_LAST = 2  # the authors' span ends with the last frame's end marker and the newline after it


class MiniCPMV2_6Adapter(FamilyAdapter):
    """Video tokens from the placeholder runs and `video_shape`; the authors' frame unit under FrameFusion."""

    name = "MiniCPM-V 2.6"
    model_types = ("minicpmv2_6",)
    importance_queries = 1  # the authors' Qwen2 path ranks by the last query row
    similarity_threshold = 0.7
    threshold_source = "the paper's value for MiniCPM-V 2.6 (appendix on hyperparameters; the authors' example too)"

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """Each video's (frames, slices per frame), and which placeholder runs are video slices."""
        shape = arguments.get("video_shape")
        if shape is None:
            return None
        mask = arguments.get("attention_mask")
        masked = isinstance(mask, torch.Tensor) and mask.ndim == 2 and not bool(mask.all())
        return {"video_shape": shape, "slice_video": arguments.get("slice_video"), "masked": masked}

    def install_extras(self, engine, model: nn.Module, patches: PatchStack) -> None:
        """Mark the module as reducing and, under FrameFusion, read frames as the authors' unit (queries and
        separators); both undone with the method."""
        module = self.multimodal_module(model)
        patches.set_attribute(module, REDUCING, True, "MiniCPM-V 2.6: reducing")
        if engine.method == "framefusion":
            patches.set_attribute(module, AUTHORS_UNIT, True, "MiniCPM-V 2.6: the authors' frame unit")

    def video_runs(self, module: nn.Module, input_ids: torch.Tensor,
                   video: dict[str, Any]) -> list[tuple[int, int, list[torch.Tensor]]]:
        """(frames, slices per frame, placeholder runs in order) of each video of a batch-1 prompt."""
        positions = token_positions(input_ids, module.config.image_token_id)
        runs = list(torch.tensor_split(positions, (torch.nonzero(positions.diff() != 1).flatten() + 1).tolist()))
        queries = module.config.query_num
        if any(run.numel() != queries for run in runs):
            raise ValueError(f"{self.name}: placeholder runs of {sorted({r.numel() for r in runs})} tokens, "
                             f"expected {queries} per slice")
        owner = video.get("slice_video")
        owner = torch.zeros(len(runs), dtype=torch.long) if owner is None else torch.as_tensor(owner).cpu()
        if owner.numel() != len(runs):
            raise ValueError(f"{self.name}: {len(runs)} placeholder runs but slice_video describes {owner.numel()}")
        videos = []
        for index, (frames, slices) in enumerate(torch.as_tensor(video["video_shape"]).cpu().reshape(-1, 2).tolist()):
            mine = [run for run, who in zip(runs, owner.tolist()) if who == index]
            if len(mine) != frames * slices:
                raise ValueError(f"{self.name}: video {index} has {len(mine)} placeholder runs, not {frames} frames "
                                 f"x {slices} slices")
            videos.append((frames, slices, mine))
        return videos

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Frames of slices x Q query tokens; with FrameFusion installed, the authors' frame unit instead."""
        if not video:
            return None
        if video.get("masked") and module.__dict__.get(REDUCING):
            raise ValueError(f"{self.name}: the prompt contains token id 0 ('!' in MiniCPM-V 2.6's vocabulary), which "
                             "the original processor masks out of attention (it pads with id 0), as ours does; "
                             "token reduction needs an unmasked prompt: leave '!' out of the question, or run dense")
        videos = self.video_runs(module, input_ids, video)
        if not videos:
            return None
        seq_len = input_ids.shape[-1]
        if module.__dict__.get(AUTHORS_UNIT):
            return authors_layout(seq_len, videos)
        spans = [torch.cat(runs) for _, _, runs in videos]
        grids = [VideoGrid(frames, slices, module.config.query_num) for frames, slices, _ in videos]
        return layout_from_videos(seq_len, spans, grids)


def authors_layout(seq_len: int, videos: list[tuple[int, int, list[torch.Tensor]]]) -> TokenLayout:
    """Each video's span from its first placeholder to two tokens after its last, cut into frames of U tokens,
    U = the distance between the first placeholders of consecutive frames (the last frame is U - 1 long)."""
    positions, video_ids, frame_ids, patch_ids, grids = [], [], [], [], []
    for index, (frames, slices, runs) in enumerate(videos):
        firsts = torch.stack([runs[f * slices][0] for f in range(frames)])  # [frames] first placeholder per frame
        start, end = int(firsts[0]), int(runs[-1][-1]) + SEPARATORS_AFTER_LAST + 1
        unit = int(firsts[1] - firsts[0]) if frames > 1 else end - start + 1
        if frames > 1 and not bool((firsts.diff() == unit).all()):
            raise ValueError(f"MiniCPM-V 2.6: the frames of video {index} are not evenly spaced in the prompt")
        if end > seq_len:
            raise ValueError(f"MiniCPM-V 2.6: video {index} ends the prompt; its separators are missing")
        span = torch.arange(start, end)
        offset = span - start
        positions.append(span)
        video_ids.append(torch.full_like(span, index))
        frame_ids.append(offset // unit)
        patch_ids.append(offset % unit)
        grids.append(VideoGrid(frames, 1, unit))
    return TokenLayout(seq_len, torch.cat(positions), torch.cat(video_ids), torch.cat(frame_ids), torch.cat(patch_ids),
                       tuple(grids))
