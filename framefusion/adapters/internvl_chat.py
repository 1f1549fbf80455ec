"""InternVL2 / 2.5 in the remote-code format (framefusion.models.internvl_chat): each video frame is one tile,
"FrameK: <img><IMG_CONTEXT>*P</img>\\n", P = 256 on the real models (a 16 x 16 grid after pixel shuffle).

As the authors' InternVL adapter (thu-nics/FrameFusion `framefusion/models/internvl/modeling_internvl_chat.py`):
- a frame's patches are its P `<IMG_CONTEXT>` tokens, patch id = row-major index in the shuffled grid; the text
  between frames is not a patch (never merged);
- the first merge point is the input of the first decoder layer (the projected vision features);
- the prune step ranks by the last prompt row's attention (importance_queries 1), and it ranks every token from the
  video's first `<IMG_CONTEXT>` to its last: the "</img>\\nFrameK: <img>" text between frames competes with the
  video tokens for the kept share (TokenLayout.prune_extra), as their pruning slices that whole span.
The processor's `vision_blocks` ([n_blocks, 2]: video index or -1 for an image, tiles) says which `<img>` blocks are
video frames, so images and several videos in one prompt are told apart exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, token_positions
from framefusion.adapters.vision_attention import SaliencyProbe, frame_attention_probe
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack


class InternVLChatAdapter(FamilyAdapter):
    """Videos are the `<img>` blocks that vision_blocks marks as frames; one frame = one tile's P tokens."""

    name = "InternVL2.5 (original format)"
    model_types = ("internvl_chat",)
    importance_queries = 1  # the authors' InternLM2 path ranks by the last query row (num=1)
    similarity_threshold = 0.5
    threshold_source = "the authors' InternVL2.5 example (thu-nics/FrameFusion script/playground/example_internvl.py)"
    prune_span_text = True  # rank the text between a video's frames in the prune step, as the authors' adapter

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The block table the processor returns with the pixels."""
        blocks = arguments.get("vision_blocks")
        return None if blocks is None else {"vision_blocks": blocks}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor,
                     video: dict[str, Any] | None) -> TokenLayout | None:
        """Split the `<IMG_CONTEXT>` runs into blocks, and read each video's blocks as its frames."""
        if video is None:
            return None
        config = module.config
        per_tile = int(config.image_seq_length)
        positions = token_positions(input_ids, config.image_token_id)
        runs = torch.tensor_split(positions, (torch.nonzero(positions.diff() != 1).flatten() + 1).tolist()) \
            if positions.numel() else ()
        blocks = video["vision_blocks"].tolist()
        if len(runs) != len(blocks):
            raise ValueError(f"InternVL: the prompt has {len(runs)} <img> blocks but vision_blocks describes "
                             f"{len(blocks)}")
        frames: dict[int, list[torch.Tensor]] = {}
        for run, (index, tiles) in zip(runs, blocks):  # a loop over blocks (frames, images), not tokens
            if run.numel() != tiles * per_tile:
                raise ValueError(f"InternVL: an <img> block of {run.numel()} tokens, expected {tiles} x {per_tile}")
            if index >= 0:
                frames.setdefault(index, []).append(run)
        if not frames:
            return None
        side = math.isqrt(per_tile)
        spans = [torch.cat(frames[index]) for index in sorted(frames)]
        grids = [VideoGrid(len(frames[index]), side, side) for index in sorted(frames)]
        layout = layout_from_videos(input_ids.shape[-1], spans, grids)
        if self.prune_span_text:
            between = [torch.arange(int(span[0]), int(span[-1]) + 1) for span in spans]
            layout = layout.with_prune_extra(torch.cat(between))
        return layout

    def vision_probe(self, model: nn.Module, patches: PatchStack) -> SaliencyProbe:
        """InternViT's attention at the feature layer, per frame; the 2 x 2 patches of a token get their mean."""
        return internvit_probe(self.multimodal_module(model), patches)


def internvit_probe(module: nn.Module, patches: PatchStack) -> SaliencyProbe:
    """Saliency of every video token: the attention its patches receive in the InternViT layer that produces the
    features (mean over heads and queries, the CLS query included), averaged over the patches pixel shuffle fuses."""
    config = module.config
    layers = module.vision_tower.encoder.layer
    feature_layer = int(config.vision_feature_layer)
    attention = layers[feature_layer if feature_layer < 0 else feature_layer - 1].attention
    step = round(1 / config.downsample_ratio)

    def finish(parts: list[torch.Tensor], _kwargs: dict) -> torch.Tensor:
        saliency = torch.cat(parts)[:, 1:]  # [tiles, side * side] patches (CLS dropped, as the features)
        side = math.isqrt(saliency.shape[1])
        blocks = saliency.view(-1, side // step, step, side // step, step).mean(dim=(2, 4))  # [tiles, s', s']
        if config.ps_version == "v1":
            blocks = blocks.transpose(1, 2)
        return blocks.flatten()

    # q and k after the layer's q/k norms (identities without qk_normalization), as its attention uses them
    return frame_attention_probe(module, attention, patches, finish, attention.q_norm, attention.k_norm)
