"""NVILA (framefusion.models.nvila): per video, groups of pooled frames, each written as its feature tokens and "\n".

The layout follows the authors' FrameFusion on NVILA: every token of a group is a video token, the group's "\n"
(the video encoder's end token) included, so a group of the TSP encoder (8 frames averaged, 16 x 16 tokens) has
257 tokens, 16 x 16 grid tokens and one trailing token (VideoGrid.trailing), and a Basic-encoder frame of a Lite
model 11 x 11 + 1. A token merges with the same token of the previous group, the "\n" with the previous "\n", as the
authors compare patch type 256 of consecutive groups. One group (8 frames on NVILA-8B-Video) leaves nothing to merge:
FrameFusion only prunes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter
from framefusion.adapters.vision_attention import SaliencyProbe, frame_attention_probe
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack


class NVILAAdapter(FamilyAdapter):
    """Video token streams from the processor's video_grids (frames per video) and the model's encoder."""

    name = "NVILA"
    model_types = ("llava_llama",)
    importance_queries = 1  # the authors' Qwen2 (NVILA) code ranks by the last query row
    similarity_threshold = 0.7
    threshold_source = "the authors' NVILA example's default (thu-nics/FrameFusion script/playground/example_nvila.py)"

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """Frames per video ([videos, 1])."""
        grids = arguments.get("video_grids")
        return None if grids is None else {"video_grids": grids}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """One grid per (video, pool size): groups as grid frames, each rows x cols tokens then its "\n"."""
        if not video:
            return None
        streams = module.video_streams(input_ids, video["video_grids"])
        grids = [VideoGrid(s["groups"], s["rows"], s["cols"], raw_frames_per_frame=s["pool"], trailing=s["trailing"])
                 for s in streams]
        return layout_from_videos(input_ids.shape[-1], [s["positions"] for s in streams], grids)

    def vision_probe(self, model: nn.Module, patches: PatchStack) -> SaliencyProbe:
        """Attention of the SigLIP layer the features come from, fused and pooled like the video tokens."""
        return nvila_probe(self.multimodal_module(model), patches)


def _fuse_saliency(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """[T, n*n] patch saliency -> [T, s*s]: the mean over each k x k block's patches (padding not counted)."""
    frames, patches = saliency.shape
    side = math.isqrt(patches)
    padded = -(-side // k) * k
    grid = torch.zeros(frames, padded, padded, dtype=saliency.dtype, device=saliency.device)
    count = torch.zeros(1, padded, padded, dtype=saliency.dtype, device=saliency.device)
    grid[:, :side, :side] = saliency.view(frames, side, side)
    count[:, :side, :side] = 1
    s = padded // k
    sums = grid.view(frames, s, k, s, k).sum(dim=(2, 4))
    return (sums / count.view(1, s, k, s, k).sum(dim=(2, 4))).flatten(1)


def nvila_probe(module: nn.Module, patches: PatchStack) -> SaliencyProbe:
    """NVILA's SigLIP tower: the attention each patch receives in layer `mm_vision_select_layer`, then as the video
    tokens are made: the projector's k x k fusion (mean), the video encoder's pooling (mean); a group's end tokens
    ("\n") get the group's mean."""
    config = module.config
    tower = module.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers  # transformers 5.24 dropped the wrapper
    select = config.mm_vision_select_layer
    attention = layers[select if select < 0 else select - 1].self_attn  # hidden_states[j] is layer j-1's output

    def finish(parts: list[torch.Tensor], kwargs: dict) -> torch.Tensor:
        saliency = torch.cat(parts)  # [sum T, n*n]
        if config.mm_vision_select_feature == "patch":
            saliency = saliency[:, 1:]
        tokens = _fuse_saliency(saliency, module.mm_projector.downsample)  # [sum T, s*s]
        grids = kwargs.get("video_grids")
        counts = [tokens.shape[0]] if grids is None else [int(t) for t in grids[:, 0].tolist()]
        encoder = config.video_encoder
        ends = len(module._token_ids(encoder.end_tokens))
        pieces = []
        for video in torch.split(tokens, counts):
            for t, h, w in encoder.pool_sizes:
                side = math.isqrt(video.shape[1])
                pooled = video.view(-1, t, side // h, h, side // w, w).mean(dim=(1, 3, 5)).flatten(1)  # [G, r*c]
                trailing = pooled.mean(dim=1, keepdim=True).expand(-1, ends)  # [G, ends]: the group's mean
                pieces.append(torch.cat([pooled, trailing], dim=1).flatten())  # layout order: group by group
        return torch.cat(pieces)

    return frame_attention_probe(module, attention, patches, finish)
