"""How much attention each video token receives inside the vision encoder (its saliency), for the methods that
rank video tokens by it (VisionZip, FastVID, HoliTom).

A probe hooks the vision encoder's attention layer whose output the LLM's video features come from, recomputes
that layer's attention probabilities from its own q and k, inside each frame, and averages them over heads and
queries: the attention each patch receives. Patches that the projector fuses into one LLM token (Qwen-VL's 2x2
merge, LLaVA-OneVision's 2x2 bilinear pooling) get the mean (Qwen) or the same pooling (LLaVA-OneVision) of their
patches' saliency. `take()` returns [N] for the N video tokens of the last get_video_features call, in the order
their features fill the prompt. It costs one extra q/k projection and one softmax per frame of that layer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from framefusion.adapters.base import rotate_half
from framefusion.core.feature_cache import SALIENCY_PROBE
from framefusion.core.patches import PatchStack


class SaliencyProbe:
    """Holds the saliency of the last encoded videos; its hooks are on the model's patch stack."""

    def __init__(self, patches: PatchStack) -> None:
        self.latest: torch.Tensor | None = None
        self.parts: list[torch.Tensor] = []
        self.patches = patches

    def take(self) -> torch.Tensor:
        """[N] saliency of the last encoded video tokens (RuntimeError if no video was encoded)."""
        if self.latest is None:
            raise RuntimeError("no vision-encoder saliency was recorded for this prompt's videos")
        return self.latest

    def serve(self, saliency: torch.Tensor) -> None:
        """Hand over the saliency recorded with cached features (the encoder did not run this time)."""
        self.latest = saliency

    def hook(self, handle, label: str) -> None:
        """Keep a hook handle on the patch stack."""
        self.patches.add_hook(handle, f"saliency probe: {label}")

    def watch_video_encoder(self, module: nn.Module, finish: Callable[[list[torch.Tensor], dict], torch.Tensor]) -> None:
        """Wrap `module.get_video_features`: collect the parts recorded while it runs, then `finish` them. The probe
        is registered on the module (SALIENCY_PROBE), so that a feature cache can store and serve its saliency."""

        def make(original: Callable) -> Callable:
            @functools.wraps(original)
            def get_video_features(*args, **kwargs):
                self.parts = []
                self.recording = True
                try:
                    output = original(*args, **kwargs)
                finally:
                    self.recording = False
                self.latest = finish(self.parts, kwargs)
                return output

            return get_video_features

        self.patches.wrap_method(module, "get_video_features", make, "saliency probe: video encoder")
        self.patches.set_attribute(module, SALIENCY_PROBE, self, "saliency probe: registered")

    recording = False


def received_attention(q: torch.Tensor, k: torch.Tensor, scaling: float) -> torch.Tensor:
    """q, k [H, n, d] of one frame -> [n] float32: softmax attention each key receives, mean over heads and queries."""
    probs = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scaling, dim=-1)  # [H, n, n]
    return probs.mean(dim=(0, 1))


# score(attention, q, k, forward kwargs, grid_thw) -> [n_tokens] saliency of the call's LLM tokens, ViT order;
# q, k [n_patches, H, d] float32 after rotary
QwenScore = Callable[[nn.Module, torch.Tensor, torch.Tensor, dict, torch.Tensor], torch.Tensor]


def qwen_vit_attention_probe(module: nn.Module, patches: PatchStack, score: QwenScore,
                             block: int | None = None) -> SaliencyProbe:
    """Hooks on a Qwen-VL vision transformer's attention block (default: its last full-attention one; Qwen2.5-VL's
    others attend in windows): `score` turns each call's q and k into token saliency, and the parts come back in the
    merger's output order (Qwen2.5-VL runs in window order)."""
    visual = module.visual
    full = list(getattr(visual, "fullatt_block_indexes", None) or [])
    if block is None:
        block = full[-1] if full else len(visual.blocks) - 1
    attention = visual.blocks[block].attn
    probe = SaliencyProbe(patches)
    grids: list[torch.Tensor] = []

    def before_visual(_module, args, kwargs):
        if probe.recording:
            grids.append(kwargs.get("grid_thw", args[1] if len(args) > 1 else None))

    def before_attention(_module, args, kwargs):
        if not probe.recording:
            return
        hidden = args[0] if args else kwargs["hidden_states"]  # [n_patches, width], normed
        cos, sin = (t[:, None, :].float() for t in kwargs["position_embeddings"])  # [n_patches, 1, d]
        q, k, _ = attention.qkv(hidden).reshape(hidden.shape[0], 3, attention.num_heads, -1).unbind(1)
        q, k = q.float() * cos + rotate_half(q.float()) * sin, k.float() * cos + rotate_half(k.float()) * sin
        probe.parts.append(score(attention, q, k, kwargs, grids[-1]))

    def finish(parts: list[torch.Tensor], _kwargs: dict) -> torch.Tensor:
        saliency = torch.cat(parts)
        if full and grids:  # Qwen2.5-VL runs in window order: back to the merger's output order
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(torch.cat(grids), spatial_merge_size=visual.spatial_merge_size,
                                                      window_size=visual.window_size, patch_size=visual.patch_size)
            saliency = saliency[torch.argsort(window_index.to(saliency.device))]
        grids.clear()
        return saliency

    probe.hook(visual.register_forward_pre_hook(before_visual, with_kwargs=True), "vision grids")
    probe.hook(attention.register_forward_pre_hook(before_attention, with_kwargs=True), "vision attention")
    probe.watch_video_encoder(module, finish)
    return probe


def qwen_vit_probe(module: nn.Module, patches: PatchStack) -> SaliencyProbe:
    """The Qwen-VL vision transformer (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5): the attention each patch receives in
    its last full-attention block, one softmax per frame, averaged over the patches a token fuses."""
    unit = module.visual.spatial_merge_size ** 2  # patches fused into one LLM token, consecutive in the sequence

    def received(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, kwargs: dict, _grid) -> torch.Tensor:
        bounds = kwargs["cu_seqlens"].tolist()
        scores = [received_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), attention.scaling)
                  for a, b in zip(bounds[:-1], bounds[1:])]  # one softmax per frame (temporal patch)
        return torch.cat(scores).view(-1, unit).mean(dim=-1)  # [n_tokens], the ViT's order

    return qwen_vit_attention_probe(module, patches, received)


def frame_attention_probe(module: nn.Module, attention: nn.Module, patches: PatchStack,
                          finish: Callable[[list[torch.Tensor], dict], torch.Tensor],
                          q_module: nn.Module | None = None, k_module: nn.Module | None = None) -> SaliencyProbe:
    """A probe of a ViT attention layer that sees one frame (image, tile) per batch row: while the video encoder
    runs, the outputs of q_module and k_module (default: the layer's q_proj and k_proj) give each frame's received
    attention [frames, n] (`received_attention`), one part per call; `finish(parts, encoder kwargs)` maps them to the
    video tokens."""
    probe = SaliencyProbe(patches)
    recorded: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(_module, _args, output):
            if probe.recording:
                recorded[name] = output

        return keep

    def after_attention(_module, _args, _output):
        if not probe.recording or "q" not in recorded:
            return
        frames, n, _ = recorded["q"].shape
        q, k = (recorded.pop(key).view(frames, n, attention.num_heads, -1).transpose(1, 2) for key in ("q", "k"))
        probe.parts.append(torch.stack([received_attention(q[f], k[f], attention.scale) for f in range(frames)]))

    for name, source in (("q", q_module or attention.q_proj), ("k", k_module or attention.k_proj)):
        probe.hook(source.register_forward_hook(keeper(name)), f"{name} projection")
    probe.hook(attention.register_forward_hook(after_attention), "vision attention")
    probe.watch_video_encoder(module, finish)
    return probe


def siglip_probe(module: nn.Module, patches: PatchStack) -> SaliencyProbe:
    """LLaVA-OneVision's SigLIP tower: the layer whose output is the feature layer, pooled like the features."""
    config = module.config
    tower = module.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers
    feature_layer = config.vision_feature_layer
    if not isinstance(feature_layer, int):
        raise ValueError("vision saliency needs a single vision_feature_layer")
    layer = layers[feature_layer if feature_layer < 0 else feature_layer - 1]  # hidden_states[j] = layer j-1's output
    attention = layer.self_attn

    def finish(parts: list[torch.Tensor], _kwargs: dict) -> torch.Tensor:
        saliency = torch.cat(parts)  # [frames, n_patches]
        if config.vision_feature_select_strategy == "default":
            saliency = saliency[:, 1:]
        side = math.isqrt(saliency.shape[1])
        grid = saliency.view(-1, 1, side, side)
        pooled = nn.functional.interpolate(grid, size=[math.ceil(side / 2)] * 2, mode="bilinear")  # as apply_pooling
        return pooled.flatten()

    return frame_attention_probe(module, attention, patches, finish)
