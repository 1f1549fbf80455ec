"""DyCoke (CVPR 2025, arXiv 2411.15024): temporal token merging before the LLM (TTM), then KV-cache pruning of
the video tokens for the layers from L on, ranked by the attention of the prompt's last token.

TTM (authors' `dycole_ttm`, llava/model/llava_arch.py), per window of 4 frames w0..w3: w0 stays whole; w1 keeps
its n tokens least cosine-similar to the same patch of w0, w2 its n least similar to w0, w3 its n least similar
to w2 (n = int((1 - K) * P), K = 0.7). Nothing is averaged: it drops tokens. KV pruning (authors'
`PrunableDynamicCache`, modeling_qwen2.py): at layer L = 3, the attention of the current query (mean over heads)
at layer L - 1 ranks the video tokens, and layers >= L attend only to the top int(N * (1 - P)) of them.

Deliberate deviations, with the reason:
- KV pruning happens once, at the end of prefill, ranked by the last prompt token's attention at layer L - 1
  (the signal DyCoke's first decode step uses), and the pruned rows are evicted from the KV cache of layers >= L.
  DyCoke keeps the full cache and re-selects during decoding whenever the attention changes (cosine < 0.9); its
  cache therefore never shrinks (the authors say so, issue #2), and under this package's kept_ratio (video tokens
  in each layer's KV cache when decoding starts) it could not go below TTM's floor (a quarter of the frames stay
  whole). The per-step re-selection is not implemented. The prefill itself is unchanged by the pruning.
- Budget: TTM at K = 0.7 keeps a share t of the video; the KV pruning share P is then set so that the layer mean
  (L t + (L_total - L) t (1 - P)) / L_total equals the budget. A budget at or above t needs no KV pruning: TTM's
  n is set from the budget instead. L is lowered (as FastV's K) when the model is too shallow for the budget,
  and follows the first attention layer on hybrid decoders.
- The reference's TTM loop skips the last window's third frame and drops an odd last frame; here every window,
  the last partial one included, follows the same rule. Against their `dycole_ttm` (KD-TAO/DyCoke @dd74634,
  benchmarks/against_authors/selection) that is the only difference without exact similarity ties (ours is their
  kept set less frame 6 of 8's extra tokens); with exact ties (static patches of identical features) top-k breaks
  them differently (torch.topk there, the lower index here). Kept tokens keep their positions (the reference's
  similarity order within a frame is irrelevant here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.core.budget import ideal_speedup, paper_layer_cost
from framefusion.core.prune import attention_importance, keep_most_important
from framefusion.core.stats import ReductionStats
from framefusion.methods.common import check_budget, layout_stats, per_video
from framefusion.methods.install import install_reducer
from framefusion.methods.oneshot import Stage, StagedReduction

WINDOW = 4  # frames per TTM window
TTM_RATE = 0.7  # K: share of a pruned frame's tokens TTM drops
KV_LAYER = 3  # L: the first layer whose KV cache is pruned


def ttm_references(frames: int) -> list[int | None]:
    """For each frame, the frame its tokens are compared with (None: kept whole): w1, w2 -> w0 and w3 -> w2."""
    reference = {0: None, 1: 0, 2: 0, 3: 2}
    return [None if reference[f % WINDOW] is None else f - f % WINDOW + reference[f % WINDOW] for f in range(frames)]


def ttm_keep(features: torch.Tensor, keep_per_frame: int) -> torch.Tensor:
    """features [T, P, D] of one video -> keep [T * P] bool: whole reference frames, the n least similar elsewhere."""
    frames, patches, _ = features.shape
    keep = torch.ones(frames, patches, dtype=torch.bool, device=features.device)
    references = ttm_references(frames)
    pruned = [f for f, ref in enumerate(references) if ref is not None]
    if pruned and keep_per_frame < patches:
        rows = torch.tensor(pruned, device=features.device)
        refs = torch.tensor([references[f] for f in pruned], device=features.device)
        similarity = torch.nn.functional.cosine_similarity(features[rows].float(), features[refs].float(), dim=-1)
        order = torch.argsort(similarity, dim=1, stable=True)  # [n_pruned, P], least similar first
        keep[rows] = False
        keep[rows[:, None], order[:, :keep_per_frame]] = True
    return keep.flatten()


def ttm_share(frames: int, keep_per_frame: int, patches: int) -> float:
    """The share of a video's tokens TTM keeps."""
    pruned = sum(ref is not None for ref in ttm_references(frames))
    return ((frames - pruned) * patches + pruned * keep_per_frame) / (frames * patches)


def ttm_count_for(frames: int, patches: int, share: float) -> int:
    """The per-frame count n that makes TTM keep `share` of the video (clipped to [1, patches])."""
    pruned = sum(ref is not None for ref in ttm_references(frames))
    if pruned == 0:
        return patches
    n = (share * frames * patches - (frames - pruned) * patches) / pruned
    return min(patches, max(1, round(n)))


@dataclass(frozen=True)
class DyCokePlan:
    """TTM's per-frame count, and where and how much the KV cache is pruned (point None: not at all)."""

    keep_per_frame: int
    kv_point: int | None
    kv_keep_share: float  # 1 - P: share of the video tokens kept in layers >= the point


def dycoke_plan(frames: int, patches: int, num_layers: int, budget: float, stack=None,
                ttm_rate: float = TTM_RATE, kv_layer: int = KV_LAYER) -> DyCokePlan:
    """How DyCoke meets `budget` on a video of frames x patches tokens, for a decoder of num_layers layers."""
    n = max(1, int((1.0 - ttm_rate) * patches))
    share = ttm_share(frames, n, patches)
    if budget >= share:
        return DyCokePlan(ttm_count_for(frames, patches, budget), None, 1.0)
    reachable = math.ceil(round(num_layers * budget / share, 9)) - 1  # the largest L with L * t < L_total * budget
    point = max(1, min(kv_layer, reachable))
    if stack is not None:
        point = stack.attention_point_from(point)
    if point is None or point >= num_layers:
        return DyCokePlan(n, None, 1.0)
    kept = (budget * num_layers / share - point) / (num_layers - point)
    return DyCokePlan(n, point, min(max(kept, 0.0), 1.0))


@dataclass
class DyCokeStats(ReductionStats):
    """The KV cache of layers >= kv_point lost the pruned tokens after prefill; the prefill itself kept them."""

    kv_point: int | None = None

    def ffn_tokens_per_layer(self) -> list[int]:
        """Every layer's FFN ran on TTM's output."""
        return [self.tokens_per_layer()[0]] * self.num_layers

    @property
    def prefill_ratio(self) -> float:
        """The prefill ran TTM's output through every layer (the KV pruning comes after it)."""
        return self.vision_tokens_per_layer()[0] / self.num_vision_tokens if self.num_vision_tokens else 1.0

    def ideal_speedup(self, hidden_size: int, ffn_size: int) -> float:
        """Dense over DyCoke prefill FLOPs: every layer ran TTM's output (the KV pruning is after prefill)."""
        tokens = self.ffn_tokens_per_layer()
        return ideal_speedup(self.seq_len, tokens, tokens, paper_layer_cost(hidden_size, ffn_size),
                             linear_layers=self.linear_layers)


class DyCokeReduction(StagedReduction):
    """TTM at point 0; at the KV point the last prompt token's attention chooses the video rows the KV caches of
    the layers from there on keep, without removing anything from the prefill.

    Each video of a prompt is planned on its own grid (its TTM count and its KV share); the KV point is one layer
    for the whole prompt, so videos whose plans put it at different layers are refused.
    """

    def __init__(self, layout, stack, device, budget: float, ttm_rate: float, kv_layer: int):
        self.plans = [dycoke_plan(grid.frames, grid.tokens_per_frame, stack.num_layers, budget, stack, ttm_rate,
                                  kv_layer) for grid in layout.grids]
        points = sorted({plan.kv_point for plan in self.plans}, key=lambda p: -1 if p is None else p)
        if len(points) > 1:
            grids = ", ".join(f"{g.frames}x{g.rows}x{g.cols}" for g in layout.grids)
            raise ValueError(f"dycoke: the videos of this prompt (token grids {grids}) need their KV caches pruned "
                             f"from different layers ({', '.join(str(p) for p in points)}), and DyCoke prunes from "
                             "one layer per prompt: sample the videos alike (same frame count and size)")
        self.kv_point = points[0] if points else None
        stages = [Stage(0, self._merge_temporally)]
        if self.kv_point is not None:
            stages.append(Stage(self.kv_point, self._evict, needs_attention=True))
        super().__init__(layout, stack.num_layers, device, "dycoke", stages)
        self.stack = stack

    def _merge_temporally(self, layout, hidden, _attention) -> torch.Tensor:
        """TTM on each video with its own plan's per-frame count: keep [n] bool."""
        keep = torch.ones(layout.num_vision_tokens, dtype=torch.bool, device=hidden.device)
        for plan, grid, (start, end) in zip(self.plans, layout.grids, per_video(layout)):
            if end - start == grid.frames * grid.tokens_per_frame:  # whole videos only (always, in prefill)
                features = hidden[start:end].reshape(grid.frames, grid.tokens_per_frame, -1)
                keep[start:end] = ttm_keep(features, plan.keep_per_frame)
        return keep

    def _evict(self, layout, hidden, attention):
        """Keep everything in prefill; record which video rows the later layers' KV caches keep (each video its
        own share of its tokens, the most attended by the last prompt token)."""
        importance = attention_importance(attention.queries, attention.keys, attention.scaling)
        rows = layout.positions.to(importance.device)  # rows of the alive video tokens
        keep = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
        for plan, (start, end) in zip(self.plans, per_video(layout)):
            video_rows = rows[start:end]
            count = round(video_rows.numel() * plan.kv_keep_share)
            keep[start:end] = keep_most_important(importance[video_rows], max(count, 1), video_rows)
        alive_rows = torch.ones(attention.keys.shape[1], dtype=torch.bool, device=rows.device)
        alive_rows[rows[~keep]] = False
        kept_rows = torch.nonzero(alive_rows).flatten()
        self.kv_keep = [None if layer < self.kv_point or self.stack.linear[layer] else kept_rows
                        for layer in range(self.num_layers)]
        return keep

    def step(self, point: int, hidden: torch.Tensor, attention=None) -> torch.Tensor:
        """TTM removes tokens; at the KV point the chosen rows are only recorded (prefill keeps every token)."""
        if point == self.kv_point and not self.finished:
            alive, version = self.alive, self.version
            super().step(point, hidden, attention)  # records the evicted tokens in the statistics
            self.alive, self.version = alive, version  # but the prefill goes on with every token
            return hidden
        return super().step(point, hidden, attention)

    def stats(self) -> DyCokeStats:
        """Statistics in which the evicted tokens leave the KV caches from the KV point on."""
        stats = layout_stats(self.layout, self.num_layers, self.method, self.removed_at, self.removed_by, self.steps,
                             cls=DyCokeStats, importance_queries=1 if self.kv_point else None,
                             kv_point=self.kv_point)
        return stats


def apply_dycoke(model: nn.Module, budget: float = 0.3, ttm_rate: float = TTM_RATE,
                 kv_layer: int = KV_LAYER) -> nn.Module:
    """Install DyCoke in place: TTM before the LLM and KV-cache pruning from layer `kv_layer`, at `budget`."""
    check_budget(budget)
    if not 0.0 <= ttm_rate < 1.0:
        raise ValueError(f"ttm_rate={ttm_rate!r} is out of range: expected 0 <= ttm_rate < 1")
    if isinstance(kv_layer, bool) or not isinstance(kv_layer, int) or kv_layer < 1:
        raise ValueError(f"kv_layer={kv_layer!r} is out of range: expected an integer >= 1")

    def make_reducer(layout, stack, device):
        return DyCokeReduction(layout, stack, device, budget, ttm_rate, kv_layer)

    return install_reducer(model, make_reducer, f"DyCoke(budget={budget}, ttm_rate={ttm_rate}, kv_layer={kv_layer})")
