"""HoliTom (arXiv 2505.21334): holistic token merging of video tokens, before the LLM and once inside it.

Outer stage, before layer 0, per video on its projected features X [T, P, D] (authors' `holitom/llava_arch.py`,
`prepare_inputs_labels_for_multimodal` and the functions it calls):
1. Temporal merging (`select_static_windows`): s[i, p] = cos(X[i, p], X[i + 1, p]); patch p is static in a
   window of frames [u, v] iff s[i, p] > tau for every i in [u, v - 1]; the window saves
   G[u, v] = n_static * (v - u) tokens. A DP over frames, dp[i] = max(dp[i - 1], max over w = 2..min(i + 1,
   max_window) of dp[i - w] + G[i - w + 1, i]) with strict > (ties keep the single frame, then the shortest
   window), partitions the video into windows; `reduced` = dp[T - 1]. Each static patch of a window becomes
   one token, the mean over the window's frames (`get_static_dynamic_features`).
2. Spatial merging (`holitom`): in each frame of a window, the dynamic tokens keep the top-k by saliency
   (`merge_tokens_by_attention_density`; with context_share D > 0 a share D of k are DPC-kNN centres among the
   rest instead); the window's static tokens keep c DPC-kNN centres, kNN k = min(knn, c), each other static token
   joins its nearest centre (Euclidean) and a centre becomes beta * x_c + (1 - beta) * mean(members)
   (`merge_tokens_by_density`, `cluster_dpc_knn`, `merge_tokens_by_clustering`).
Inner stage (`holitom/modeling_qwen2.py`, `Qwen2Model_holitom.forward`), prefill only, at layer K (18 of
Qwen2-7B's 28, scaled to the depth): keep the round(n (1 - r)) video tokens the last prompt token attends to most
(head mean) and merge every other one into its most cosine-similar kept token with the authors' sequential running
average h_t <- (h_t + h_j) / 2 in ascending j, i.e. h_t / 2^m + sum_i h_{j_i} / 2^(m - i + 1) (vectorised).
Defaults: tau 0.8 (the authors' scripts use 0.65 at retention 0.10), beta 0.6, D 0, knn 7, max_window 1024, r 0.5.

Deliberate deviations:
- Budget exactness. The outer stage keeps exactly M = round(R T P) tokens (at least 1) per video. The authors
  keep ceil(n_dyn r') per frame and round(n_s r') per window, r' = min(R N / (N - reduced), 1). Here the groups
  (each window's static tokens, each frame's dynamic tokens; n_g tokens, sum N - reduced) share M by largest
  remainder over the quotas n_g M / (N - reduced) (= n_g r'; integer arithmetic, ties to the earlier group).
  When the temporal merge alone already keeps fewer than M tokens (r' clipped at 1 in the authors' code),
  everything is kept and the static patches get back M - (N - reduced) tokens, shared by largest remainder in
  proportion to what each saved (W - 1): a patch given e more is split into e + 1 equal runs of frames, one mean
  token each. The layer average R (K + (L - K)(1 - r)) / L lands on the budget with R = budget L /
  (K + (L - K)(1 - r)); where that R would exceed 1, R = 1 and r is lowered instead; inner=False: R = budget.
- Positions: the engine keeps positions, so a merged token sits at its first occurrence (a static patch's token
  at the window's first frame, a cluster at its centre, an inner merge at its kept token); the authors renumber
  the compressed sequence densely, static tokens first in each window.
- Point of the inner merge: it runs at our reduction point K, after layer K - 1's attention and before its FFN,
  on the post-attention states with that attention's last row; the authors merge the states entering layer K
  (after layer K - 1's FFN). On a hybrid decoder it runs at the first point >= K that follows an attention layer.
- Ties: DPC-kNN (clustering.py) breaks density ties by a deterministic ramp instead of random noise (the
  densest token's delta is the largest distance of the group, as the authors'); top-k by saliency or attention
  goes to the earlier token on ties.
- budget_rule="authors": the outer stage keeps what the authors' arithmetic keeps at their RETAIN_RATIO = budget
  (ceil(n_dyn r') a frame's dynamic tokens, round(n_s r') a window's static ones, r' = min(R N / (N - reduced), 1);
  no run splitting) with their DPC-kNN scores in float32 and without noise, and the inner merge comes on top
  (kept_ratio below the budget, reported). On the harness inputs it gives their outer stage's tokens exactly
  (benchmarks/against_authors/selection: cokeshao/HoliTom @e9b2972, max |diff| 0); "matched" differs there only by
  the apportionment (0.86-0.99 of their tokens found among ours).
- Saliency: "attention" is the vision encoder's attention each token receives (framefusion's vision probe, the
  authors' SigLIP last-layer head and query mean); "norm" is the L2 norm of the projected token, the proxy of
  VidCom2's Qwen adaptation (`token_compressor/holitom/core.py`), for families without a probe (InternVL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.core.patches import PatchStack
from framefusion.core.prune import attention_importance, keep_most_important
from framefusion.methods.clustering import authors_density_scores, dpc_knn_scores, nearest_centre, top_indices
from framefusion.methods.common import check_budget, check_budget_rule
from framefusion.methods.install import install_method
from framefusion.methods.memo import memo_of
from framefusion.methods.oneshot import (
    Selection,
    Stage,
    StagedReduction,
    check_saliency,
    keep_per_video,
    saliency_source,
)

REFERENCE_LAYER, REFERENCE_DEPTH = 18, 28  # the authors' inner layer on Qwen2-7B


@dataclass(frozen=True)
class HoliTomConfig:
    """HoliTom's hyperparameters (the authors' defaults); ValueError on any out of range."""

    tau: float = 0.8  # cosine above which a patch is static between consecutive frames
    beta: float = 0.6  # weight of a cluster centre's own features in its merged token
    context_share: float = 0.0  # D: share of a frame's dynamic budget given to DPC-kNN context tokens
    knn: int = 7  # K: neighbours of the DPC-kNN density
    max_window: int = 1024  # longest window of frames the temporal merge considers
    inner_ratio: float = 0.5  # r: share of the alive video tokens merged away at the inner layer
    inner_layer: int | None = None  # K; None: round(L * 18 / 28), at least 1

    def __post_init__(self):
        for name, low, high, high_closed in (("tau", -1.0, 1.0, True), ("beta", 0.0, 1.0, True),
                                             ("context_share", 0.0, 1.0, True), ("inner_ratio", 0.0, 1.0, False)):
            value = getattr(self, name)  # NaN fails the comparison
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high
                    or (value == high and not high_closed)):
                raise ValueError(f"{name}={value!r} is out of range: expected {low} <= {name} "
                                 f"{'<=' if high_closed else '<'} {high}")
        for name in ("knn", "max_window", "inner_layer"):
            value = getattr(self, name)
            if (name != "inner_layer" or value is not None) and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} is out of range: expected an integer >= 1"
                                 + (" or None" if name == "inner_layer" else ""))


# ---- temporal merging ---------------------------------------------------------------------------------------
def patch_similarity(features: torch.Tensor) -> torch.Tensor:
    """features [T, P, D] -> [T - 1, P]: cosine of each patch with the same patch one frame later."""
    x = torch.nn.functional.normalize(features.float(), dim=-1)
    return (x[:-1] * x[1:]).sum(dim=-1)


def static_reach(similarity: torch.Tensor, tau: float) -> torch.Tensor:
    """similarity [T - 1, P] -> [T, P] long: the last frame v with patch p static over [u, v] (u itself if none)."""
    frames = similarity.shape[0] + 1
    index = torch.arange(frames - 1, device=similarity.device)[:, None].expand_as(similarity)
    breaks = torch.where(similarity > tau, torch.full_like(index, frames - 1), index)  # [T - 1, P]
    reach = torch.flip(torch.cummin(torch.flip(breaks, [0]), dim=0).values, [0])  # first break at or after u
    return torch.cat([reach, torch.full((1, similarity.shape[1]), frames - 1, device=similarity.device)])


def window_gains(reach: torch.Tensor) -> torch.Tensor:
    """reach [T, P] -> G [T, T] long: G[u, v] = (patches static over [u, v]) * (v - u), 0 for v <= u."""
    frames = reach.shape[0]
    counts = torch.zeros(frames, frames, dtype=torch.long, device=reach.device)
    counts.scatter_add_(1, reach, torch.ones_like(reach))  # [u, r]: patches whose reach from u is r
    at_least = torch.flip(torch.cumsum(torch.flip(counts, [1]), dim=1), [1])  # [u, v]: reach >= v
    frame = torch.arange(frames, device=reach.device)
    return at_least * (frame[None, :] - frame[:, None]).clamp(min=0)


def segment_frames(gain: torch.Tensor, max_window: int) -> tuple[list[tuple[int, int]], int]:
    """The DP partition of the frames into windows [(u, v), ...] maximising the saved tokens, and that total."""
    frames = gain.shape[0]
    best = torch.zeros(frames + 1, dtype=torch.long)  # best[i + 1] = dp[i], best[0] = 0
    start = list(range(frames))
    gain = gain.cpu()
    for i in range(frames):
        best[i + 1] = best[i]
        widest = min(i + 1, max_window)
        if widest >= 2:
            first = i + 1 - torch.arange(2, widest + 1)  # window [first, i] for w = 2, 3, ...
            value = best[first] + gain[first, i]
            w = int(torch.argmax(value))  # the first maximum: the shortest window
            if value[w] > best[i]:
                best[i + 1], start[i] = value[w], int(first[w])
    windows, i = [], frames - 1
    while i >= 0:
        windows.append((start[i], i))
        i = start[i] - 1
    return windows[::-1], int(best[frames])


# ---- spatial merging ----------------------------------------------------------------------------------------
def apportion(sizes: torch.Tensor, total: int) -> torch.Tensor:
    """Split `total` (<= sum) over groups in proportion to sizes [g] long: floors plus largest remainders, exact
    integer arithmetic, ties to the earlier group. Returns [g] long, each <= its size."""
    sizes = sizes.long().cpu()
    whole = max(int(sizes.sum()), 1)
    counts, remainder = (sizes * total) // whole, (sizes * total) % whole
    order = torch.argsort(remainder, descending=True, stable=True)[:total - int(counts.sum())]
    counts[order] += 1
    return counts


def cluster_merge(x: torch.Tensor, count: int, knn: int, beta: float, scores=dpc_knn_scores
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep `count` DPC-kNN centres of tokens x [n, D]; the others join their nearest centre (Euclidean).

    Returns (into [n] long: the centre (0..n-1) each token joined, itself for a centre, -1 when count is 0;
    merged [n, D]: a centre's beta * x_c + (1 - beta) * mean(members), x_c without members).
    """
    n = x.shape[0]
    x = x.float()
    if count <= 0 or count >= n:
        return (torch.full((n,), -1) if count <= 0 else torch.arange(n)).to(x.device), x
    centres = top_indices(scores(x, min(knn, count)), count)  # [c] ascending
    into = centres.new_zeros(n)
    into[centres] = centres
    others = torch.ones(n, dtype=torch.bool, device=x.device)
    others[centres] = False
    into[others] = centres[nearest_centre(x[others], x[centres], "euclidean")]
    members = torch.bincount(into[others], minlength=n)  # [n]
    total = torch.zeros_like(x).index_add_(0, into[others], x[others])
    mean = total / members.clamp(min=1)[:, None]
    merged = torch.where((members > 0)[:, None], beta * x + (1 - beta) * mean, x)
    return into, merged


def spatial_merge(index: torch.Tensor, static: bool, count: int, merged: torch.Tensor, rank: torch.Tensor,
                  into: torch.Tensor, config: HoliTomConfig, scores=dpc_knn_scores) -> None:
    """Keep `count` of the group of tokens `index` [g], in place in merged [n, D] and into [n]: a static group
    keeps DPC-kNN centres; a dynamic one its top round(count (1 - D)) by rank [n], plus centres of the rest."""
    dominant = 0 if static else round(count * (1 - config.context_share))
    top = top_indices(rank[index], dominant)  # [dominant] positions in the group
    rest = torch.ones(index.numel(), dtype=torch.bool, device=index.device).index_fill_(0, top, False)
    into[index[top]] = index[top]
    rest = index[rest]
    local, states = cluster_merge(merged[rest], count - dominant, config.knn, config.beta, scores)
    into[rest] = torch.where(local >= 0, rest[local.clamp(min=0)], -1)
    merged[rest] = states


def authors_group_counts(groups: list[tuple[torch.Tensor, bool]], ratio: float) -> list[int]:
    """The authors' per-group counts at retention `ratio` (their r'): round(n_s r') a window's static tokens,
    ceil(n_dyn r') a frame's dynamic ones (`merge_tokens_by_density`, `merge_tokens_by_attention_density`)."""
    return [round(index.numel() * ratio) if static else math.ceil(index.numel() * ratio) for index, static in groups]


def holitom_video(features: torch.Tensor, budget: float, saliency: torch.Tensor,
                  config: HoliTomConfig = HoliTomConfig(), budget_rule: str = "matched") -> Selection:
    """features [T, P, D], saliency [T, P] of one video -> the Selection [T * P] keeping round(budget T P) tokens
    (budget_rule "authors": the authors' per-window and per-frame rounding at r' = min(budget N / (N - reduced), 1),
    and their DPC-kNN scores without noise)."""
    frames, patches, _ = features.shape
    n, device = frames * patches, features.device
    x, rank = features.float().reshape(n, -1), saliency.float().reshape(n)
    reach = static_reach(patch_similarity(features), config.tau)  # [T, P]
    windows, reduced = segment_frames(window_gains(reach), config.max_window)
    target = min(max(round(budget * n), 1), n)
    authors_ratio = min(budget / ((n - reduced) / n), 1)
    if budget_rule == "authors":
        target = n - reduced if authors_ratio >= 1 else -1  # no static runs split; -1: always the spatial merge
    owner = torch.arange(n, device=device).reshape(frames, patches)  # the token each token merges into in time
    statics = []  # per window: its static patches [n_s]
    for u, v in windows:
        static = torch.nonzero(reach[u] >= v).flatten() if v > u else reach.new_zeros(0)
        statics.append(static)
        owner[u:v + 1, static] = u * patches + static
    spare = target - (n - reduced)
    if spare > 0:  # the temporal merge alone went under the budget: split static patches into runs of frames
        caps = torch.cat([torch.full((s.numel(),), v - u) for (u, v), s in zip(windows, statics)])
        extra = apportion(caps, spare).to(device).split([s.numel() for s in statics])
        for (u, v), static, more in zip(windows, statics, extra):
            width, runs = v - u + 1, more + 1  # [n_s] runs per patch
            offset = torch.arange(width, device=device)[:, None]  # [W, 1]
            run_start = ((offset + 1) * runs - 1) // width * width // runs  # [W, n_s] first frame of its run
            owner[u:v + 1, static] = (u + run_start) * patches + static
    owner = owner.flatten()
    members = torch.bincount(owner, minlength=n)
    merged = torch.zeros_like(x).index_add_(0, owner, x) / members.clamp(min=1)[:, None]  # [n, D] run means
    keep = owner == torch.arange(n, device=device)
    into = torch.where(keep, torch.arange(n, device=device), owner)  # spatial: the kept token each token joined
    if spare < 0:
        groups = []  # (token indices, static?): each window's static tokens, then each of its frames' dynamic ones
        for (u, v), static in zip(windows, statics):
            dynamic = torch.ones(patches, dtype=torch.bool, device=device)
            dynamic[static] = False
            groups += [(u * patches + static, True)] if static.numel() else []
            groups += [(f * patches + torch.nonzero(dynamic).flatten(), False) for f in range(u, v + 1)
                       if dynamic.any()]
        if budget_rule == "authors":
            counts, scores = authors_group_counts(groups, authors_ratio), authors_density_scores
        else:
            counts, scores = apportion(torch.tensor([g.numel() for g, _ in groups]), target).tolist(), dpc_knn_scores
        for (index, static), count in zip(groups, counts):
            spatial_merge(index, static, count, merged, rank, into, config, scores)
        keep = into == torch.arange(n, device=device)
        into = torch.where(owner == torch.arange(n, device=device), into, into[owner])  # follow the time merge
    into = torch.where(keep, torch.full_like(into, -1), into)
    return Selection(keep, merged.to(features.dtype), into)


# ---- inner merge --------------------------------------------------------------------------------------------
def sequential_average(states: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """states [n, D], into [n] long (-1: not merged) -> [n, D]: each target t after h_t <- (h_t + h_j) / 2 for its
    members j in ascending order, i.e. h_t / 2^m + sum_i h_{j_i} / 2^(m - i + 1). Vectorised."""
    x = states.float()
    source = torch.nonzero(into >= 0).flatten()  # ascending
    source = source[torch.argsort(into[source], stable=True)]  # grouped by target, ascending inside
    target = into[source]
    m = torch.bincount(target, minlength=x.shape[0])  # [n] members per token
    rank = torch.arange(source.numel(), device=x.device) - (torch.cumsum(m, 0) - m)[target]  # i - 1
    out = x * torch.exp2(-m.float())[:, None]
    return out.index_add_(0, target, x[source] * torch.exp2(-(m[target] - rank).float())[:, None])


def inner_selection(importance: torch.Tensor, hidden: torch.Tensor, video: torch.Tensor, positions: torch.Tensor,
                    ratio: float) -> Selection:
    """Per video: keep the round(n (1 - ratio)) most important (>= 1) of importance [n]; merge the rest into their
    most cosine-similar kept token of hidden [n, D] by the sequential average."""
    n, device = importance.numel(), hidden.device
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    into = torch.full((n,), -1, dtype=torch.long, device=device)
    bounds = torch.unique_consecutive(video.cpu(), return_counts=True)[1].cumsum(0).tolist()
    for start, end in zip([0] + bounds[:-1], bounds):
        count = max(1, round((end - start) * (1 - ratio)))
        local = keep_most_important(importance[start:end].to(device), count, positions[start:end].to(device))
        kept, dropped = torch.nonzero(local).flatten() + start, torch.nonzero(~local).flatten() + start
        keep[kept] = True
        if dropped.numel():
            into[dropped] = kept[nearest_centre(hidden[dropped], hidden[kept], "cosine")]
    return Selection(keep, sequential_average(hidden, into).to(hidden.dtype), into)


def inner_merge(layout, hidden: torch.Tensor, attention, ratio: float) -> Selection:
    """The inner stage's chooser: rank the alive video tokens by the last prompt row's attention at this layer."""
    positions = layout.positions.to(attention.keys.device)
    importance = attention_importance(attention.queries, attention.keys, attention.scaling)[positions]
    return inner_selection(importance, hidden, layout.video, positions, ratio)


# ---- budget and install -------------------------------------------------------------------------------------
def holitom_point(stack, inner_layer: int | None = None) -> int | None:
    """The inner merge's reduction point: K = round(L * 18 / 28) (>= 1) or inner_layer, moved past linear layers."""
    layer = max(1, round(stack.num_layers * REFERENCE_LAYER / REFERENCE_DEPTH)) if inner_layer is None else inner_layer
    return stack.attention_point_from(layer)


def holitom_budget(budget: float, num_layers: int, point: int | None, ratio: float) -> tuple[float, float]:
    """(outer retention R, inner ratio r) with R (K + (L - K)(1 - r)) / L = budget; r lowered where R would pass 1."""
    if point is None or ratio == 0:
        return budget, 0.0
    outer = budget * num_layers / (point + (num_layers - point) * (1 - ratio))
    if outer <= 1:
        return outer, ratio
    return 1.0, min(max(1 - (budget * num_layers - point) / (num_layers - point), 0.0), ratio)


def apply_holitom(model: nn.Module, budget: float = 0.3, saliency: str = "attention", inner: bool = True,
                  budget_rule: str = "matched", **hyperparameters) -> nn.Module:
    """Install HoliTom in place so that the mean over layers of kept video tokens is `budget`.

    saliency: "attention" (vision encoder) or "norm" (feature norm); inner: also merge at layer K;
    budget_rule "authors": the outer stage retains `budget` by the authors' arithmetic (their RETAIN_RATIO), the
    inner merge comes on top; hyperparameters: the fields of HoliTomConfig.
    """
    check_budget(budget)
    check_budget_rule(budget_rule)
    config = HoliTomConfig(**hyperparameters)
    check_saliency(saliency)
    if not isinstance(inner, bool):
        raise ValueError(f"inner={inner!r} is out of range: expected True or False")

    def video_fn(features, retention, rank):
        return holitom_video(features, retention, rank, config, budget_rule)

    def build(patches: PatchStack):
        score = saliency_source(model, "holitom", saliency, patches)

        def make_reducer(layout, stack, device):
            point = holitom_point(stack, config.inner_layer) if inner else None
            outer, ratio = holitom_budget(budget, stack.num_layers, point, config.inner_ratio)
            if budget_rule == "authors":
                outer, ratio = budget, (config.inner_ratio if point is not None else 0.0)
            stages = [Stage(0, lambda lay, hidden, _attention: keep_per_video(lay, hidden, outer, video_fn,
                                                                              score(hidden), memo_of(model),
                                                                              "holitom"))]
            if point is not None and ratio > 0:
                stages.append(Stage(point, lambda lay, hidden, attention: inner_merge(lay, hidden, attention, ratio),
                                    needs_attention=True))
            return StagedReduction(layout, stack.num_layers, device, "holitom", stages)

        return make_reducer

    description = f"HoliTom(budget={budget}, saliency={saliency}, inner={inner}, tau={config.tau})"
    return install_method(model, description, build)
