"""LLaVA-Video / LLaVA-OneVision in LLaVA-NeXT's original format (framefusion.models.llava_next, model_type
llava_qwen): frames x pooled rows x (pooled cols + a newline token) with mm_newline_position grid.

As in the authors' LLaVA-Video adapter (thu-nics/FrameFusion, framefusion/models/llava_video), every token a frame
contributes is a vision token with its own patch id, the row-end newline tokens included: P = 14 x (14 + 1) = 210 per
384-px frame with bilinear pooling (13 x 14 = 182 with average or max). A token is compared with the same patch id
of the previous alive frame, so a newline token is compared with the same row's newline of the frame before; on the
input embeddings (the first merge point, before layer 0's attention) those are the same image_newline vector, so
they merge there. With mm_newline_position frame, the newline after each frame is that frame's last patch;
one_token's single newline after the video belongs to no frame and is never reduced; no_token has none.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter, split_sizes, token_positions
from framefusion.adapters.vision_attention import SaliencyProbe, frame_attention_probe
from framefusion.core.layout import TokenLayout, VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack


class LlavaNextAdapter(FamilyAdapter):
    """The native LlavaQwen model: placeholder tokens already expanded, newline tokens inside each frame's grid."""

    name = "LLaVA-Video / LLaVA-OneVision (original LLaVA-NeXT format)"
    model_types = ("llava_qwen",)
    importance_queries = 1  # the authors' LLaVA-Video path runs their Qwen2 attention with num=1
    similarity_threshold = 0.6
    threshold_source = "the paper's value for the LLaVA-Video series (appendix on hyperparameters)"

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """Videos, frames per video and frame height, from the [V, T, 3, H, W] pixels."""
        pixels = arguments.get("pixel_values_videos")
        if pixels is None:
            return None
        return {"videos": int(pixels.shape[0]), "frames": int(pixels.shape[1]), "height": int(pixels.shape[-2])}

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Each video's placeholder span: frames x rows x cols tokens (then one_token's newline, left out)."""
        if not video:
            return None
        from framefusion.models.llava_next.features import video_tokens  # the format loads only when used

        config = module.config
        tokens = video_tokens(video["frames"], video["height"] // config.vision_config.patch_size, config.settings)
        positions = token_positions(input_ids, config.video_token_id)
        spans = split_sizes(positions, [tokens.total] * video["videos"], self.name)
        grid = VideoGrid(tokens.frames, tokens.rows, tokens.cols)
        return layout_from_videos(input_ids.shape[-1], [span[: tokens.total - tokens.trailing] for span in spans],
                                  [grid] * video["videos"])

    def vision_probe(self, model: nn.Module, patches: PatchStack) -> SaliencyProbe:
        """Attention received in the SigLIP layer whose output is the feature, pooled and arranged like the tokens."""
        return llava_next_probe(self.multimodal_module(model), patches)


def llava_next_probe(module: nn.Module, patches: PatchStack) -> SaliencyProbe:
    """Saliency of every video token: the attention each patch receives in the tower's last built layer (the
    feature layer), pooled as the features are; a newline token gets the mean of its row (grid) or frame (frame)."""
    from framefusion.models.llava_next.features import pooled_side, video_tokens
    from framefusion.models.llava_next.modeling import tower_body

    config = module.config
    settings = config.settings
    attention = tower_body(module.vision_tower).encoder.layers[-1].self_attn

    def finish(parts: list[torch.Tensor], kwargs: dict) -> torch.Tensor:
        saliency = torch.cat(parts)  # [V * T, side * side]
        pixels = kwargs.get("pixel_values_videos")
        frames = pixels.shape[1] if pixels is not None else saliency.shape[0]
        side = config.vision_config.image_size // config.vision_config.patch_size
        grid = saliency.view(-1, 1, side, side)
        stride = settings.mm_spatial_pool_stride
        if settings.mm_spatial_pool_mode == "average":
            pooled = nn.functional.avg_pool2d(grid, stride)
        elif settings.mm_spatial_pool_mode == "max":
            pooled = nn.functional.max_pool2d(grid, stride)
        else:
            pooled = nn.functional.interpolate(grid, size=[pooled_side(side, settings)] * 2, mode="bilinear")
        pooled = pooled[:, 0]  # [V * T, s, s]
        layout = video_tokens(frames, side, settings)
        if layout.cols == pooled.shape[-1] + 1:  # grid: a newline column
            pooled = torch.cat((pooled, pooled.mean(dim=-1, keepdim=True)), dim=-1)
        elif layout.rows == 1 and layout.cols == pooled[0].numel() + 1:  # frame: one newline per frame
            flat = pooled.flatten(1)
            pooled = torch.cat((flat, flat.mean(dim=-1, keepdim=True)), dim=-1)
        return pooled.flatten()

    return frame_attention_probe(module, attention, patches, finish)
