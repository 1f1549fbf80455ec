"""FastVID (NeurIPS 2025, arXiv 2503.11187): segment the video by frame similarity, then per segment keep each
frame's salient tokens plus density-peak context tokens on a few anchor frames, into which the segment's other
tokens are merged; before the LLM.

Per video, on its projected features [T, P, D] (Qwen-VL: T temporal patches) and saliency [T, P]:
1. DySeg: g_f = mean of frame f's tokens; t_i = cos(g_i, g_i+1); cut after frame i for the min_segments - 1
   smallest t_i and for every t_i < cut_threshold; segments are the runs of frames between cuts.
2. Budget: frame f keeps n_f tokens, n_sal = n_f - floor(n_f * context_ratio) salient ones; the context share
   floor(n_f * context_ratio) of a segment's frames goes to its anchor frames: the last frame and every
   anchor_interval-th one counting back from it.
3. STPrune: salient = the n_sal tokens of highest saliency in each frame; an anchor's context tokens = the top
   of its frame's non-salient tokens by DPC-kNN score (4 nearest neighbours, itself included).
4. DTM, for every anchor: each source joins its most cosine-similar context token of that anchor, and a context
   token c with assigned set S becomes w * x_c + (1 - w) * mean(S), w = max(1 / (|S| + 1), context_weight).
   Sources are all non-salient tokens of the whole segment (of the anchor's frame alone in a one-frame
   segment, or when anchor_interval = 1: the authors' `frm_context_num_list == frame_context_num` test), the
   context tokens included, so |S| counts c itself and a token is merged into one context token of EACH anchor
   of its segment. All other non-salient tokens are removed after contributing (merged_into: their first
   anchor's context token, -1 where the segment has no context token).
Defaults (LLaVA-OneVision `scripts/eval.sh`): min_segments c = 8, cut_threshold tau = 0.9, context_ratio
d = 0.4, anchor_interval p = 4, context_weight beta = 0.6.

This follows the authors' "parallel" LLaVA-OneVision version, `fastvid_llavaonevision/.../modeling_qwen2.py`,
`Qwen2Model.forward`, block `FastVID` (DySeg, ATS, parallel density score, DTM for single- and multi-frame
segments). Deliberate deviations, with the reason:
- Budget: the authors keep int(P * r) tokens a frame and floor(n_ctx * L / m) per anchor, landing under the
  budget (9.7% for r = 0.1), and fail once an anchor's share exceeds its non-salient tokens (r > ~0.45). Here
  the video keeps exactly K = round(budget * T * P) tokens (within [T, T * P]): n_f is K apportioned over the
  frames by floors plus largest remainders (vidcom2.frame_budgets: earlier frames get the extra token, >= 1 a
  frame); a segment's context total is split equally over its anchors, the extra tokens to the anchors
  nearest the segment end, each capped at its frame's non-salient tokens; context beyond every anchor's cap
  becomes extra salient tokens of the segment's other frames, split equally (extra to earlier frames).
  budget = 1 returns the video unchanged (the merge rule would still average the anchors' context tokens).
- Global feature: the mean of the frame's projected tokens (the authors' Qwen2.5-VL version); their LLaVA
  version uses SigLIP's attention-pooling head, which Hugging Face LLaVA-OneVision checkpoints do not ship.
- Saliency: the vision-encoder attention each token receives as framefusion's probe reads it (the authors: the
  SigLIP head's probe attention, or the last Qwen ViT block's mean-query attention), or with saliency="norm"
  the feature L2 norm (VidCom2's Qwen adaptation), for towers whose attention is not read.
- Density score (clustering.dpc_knn_scores, shared with HoliTom): ties broken by a deterministic ramp instead
  of U(0, 1) * 1e-6 noise; the densest token's delta is the largest distance within the frame, as the authors'.
Kept tokens keep their own positions (a context token its own, as in the authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framefusion.methods.clustering import dpc_knn_scores, nearest_centre, top_indices
from framefusion.methods.oneshot import Selection, install_pre_llm
from framefusion.methods.vidcom2 import frame_budgets

DENSITY_NEIGHBOURS = 4  # k of DPC-kNN, itself included


@dataclass(frozen=True)
class FastVIDConfig:
    """FastVID's hyper-parameters (the paper's c, tau, d, p, beta), validated."""

    min_segments: int = 8  # c: at least c segments (c - 1 cuts at the least similar transitions)
    cut_threshold: float = 0.9  # tau: also cut wherever consecutive frames are less similar than this
    context_ratio: float = 0.4  # d: share of each frame's tokens that are context tokens on anchor frames
    anchor_interval: int = 4  # p: an anchor frame every p frames, counted back from the segment end
    context_weight: float = 0.6  # beta: least weight of a context token's own feature in its merge

    def __post_init__(self):
        for name in ("min_segments", "anchor_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")
        for name, inside, text in (("cut_threshold", lambda v: -1.0 <= v <= 1.0, "-1 <= cut_threshold <= 1"),
                                   ("context_ratio", lambda v: 0.0 <= v < 1.0, "0 <= context_ratio < 1"),
                                   ("context_weight", lambda v: 0.0 <= v <= 1.0, "0 <= context_weight <= 1")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value):
                raise ValueError(f"{name}={value!r} is out of range: expected {text}")


def frame_transitions(features: torch.Tensor) -> torch.Tensor:
    """features [T, P, D] -> [T - 1] cosine similarity of consecutive frames' mean features."""
    g = torch.nn.functional.normalize(features.float().mean(dim=1), dim=-1)  # [T, D]
    return (g[:-1] * g[1:]).sum(dim=-1)


def segment_lengths(transitions: torch.Tensor, min_segments: int, cut_threshold: float) -> list[int]:
    """transitions [T - 1] -> lengths of the segments (sum T): cut at the min_segments - 1 lowest transitions (ties
    to the earlier one; every one when there are fewer) and wherever a transition is below cut_threshold."""
    count = min(min_segments - 1, transitions.numel())
    cut = transitions < cut_threshold  # [T - 1]
    cut[torch.argsort(transitions, stable=True)[:count]] = True
    ends = torch.cat([torch.tensor([-1]), torch.nonzero(cut.cpu()).flatten(), torch.tensor([transitions.numel()])])
    return ends.diff().tolist()


def anchor_frames(lengths: list[int], interval: int) -> torch.Tensor:
    """[T] bool: a segment's last frame and every interval-th frame counted back from it."""
    return torch.cat([torch.arange(length - 1, -1, -1) % interval == 0 for length in lengths])


def fill_equally(total: int, capacity: torch.Tensor) -> torch.Tensor:
    """Split min(total, capacity.sum()) over slots as equally as their capacities [m] allow; of equal slots the
    first ones get the extra token. Returns [m] long."""
    counts = torch.zeros_like(capacity)
    left = int(total)
    while left > 0 and (open_ := counts < capacity).any():
        share = left // int(open_.sum())
        if share == 0:
            counts[torch.nonzero(open_).flatten()[:left]] += 1
            break
        add = torch.where(open_, torch.minimum(capacity - counts, torch.full_like(counts, share)), 0)
        counts += add
        left -= int(add.sum())
    return counts


def token_counts(patches: int, kept: torch.Tensor, lengths: list[int], anchors: torch.Tensor,
                 context_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame kept counts kept [T] -> (salient [T], context [T], zero off anchors), summing to kept.sum()."""
    share = torch.floor(kept.double() * context_ratio).long()  # [T] context share of each frame
    salient = kept - share
    context = torch.zeros_like(kept)
    start = 0
    for length in lengths:  # a loop over segments
        frames = torch.arange(start, start + length)
        ends_first = frames[anchors[frames]].flip(0)  # the segment's anchors, the last frame first
        total = int(share[frames].sum())
        context[ends_first] = fill_equally(total, patches - salient[ends_first])
        overflow = total - int(context[frames].sum())
        salient[frames] += fill_equally(overflow, patches - salient[frames] - context[frames])
        start += length
    return salient, context


def top_per_frame(score: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """score [T, P], counts [T] -> [T, P] bool: each frame's counts[f] highest scores (ties to the lower index)."""
    order = torch.argsort(score, dim=1, descending=True, stable=True)  # [T, P]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return rank < counts.to(score.device)[:, None]


def merge_into_context(sources: torch.Tensor, context: torch.Tensor, weight: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """sources [n, D], context [c, D] -> (merged context [c, D] float32, the context index [n] each source joined).

    Each source joins its most cosine-similar context token; c becomes w * x_c + (1 - w) * mean(S),
    w = max(1 / (|S| + 1), weight)."""
    assign = nearest_centre(sources, context)  # [n]
    size = torch.bincount(assign, minlength=context.shape[0]).float()[:, None]  # [c, 1]
    total = torch.zeros(context.shape, dtype=torch.float32, device=context.device).index_add_(
        0, assign, sources.float())
    w = (1.0 / (size + 1.0)).clamp(min=weight)
    return w * context.float() + (1.0 - w) * total / size.clamp(min=1.0), assign


def fastvid_video(features: torch.Tensor, budget: float, saliency: torch.Tensor,
                  config: FastVIDConfig = FastVIDConfig()) -> Selection:
    """features [T, P, D], saliency [T, P] of one video -> Selection of round(budget * T * P) tokens (frame-major).

    merged_into: a removed token's context token in the first anchor (of its segment) that has context tokens;
    -1 where none has."""
    frames, patches, dim = features.shape
    device = features.device
    kept = frame_budgets(torch.ones(frames), patches, round(budget * frames * patches))  # [T]
    if int(kept.sum()) == frames * patches:
        return Selection(torch.ones(frames * patches, dtype=torch.bool, device=device))
    lengths = segment_lengths(frame_transitions(features), config.min_segments, config.cut_threshold)
    anchors = anchor_frames(lengths, config.anchor_interval)  # [T] bool
    salient, context = token_counts(patches, kept, lengths, anchors, config.context_ratio)
    is_salient = top_per_frame(saliency, salient)  # [T, P]
    flat = features.reshape(frames * patches, dim)  # [T * P, D]
    ids = torch.arange(frames * patches, device=device).view(frames, patches)
    keep = is_salient.flatten().clone()  # [T * P]
    merged = flat.clone()
    merged_into = torch.full((frames * patches,), -1, dtype=torch.long, device=device)
    start = 0
    for length in lengths:  # loops over segments and their anchor frames, never over tokens
        frames_of = range(start, start + length)
        segment_sources = ids[start:start + length][~is_salient[start:start + length]]  # [n] frame-major
        for f in [f for f in frames_of if anchors[f] and context[f] > 0]:
            candidates = ids[f][~is_salient[f]]  # [m] the anchor frame's non-salient tokens
            score = dpc_knn_scores(flat[candidates], DENSITY_NEIGHBOURS)
            centres = candidates[top_indices(score, int(context[f]))]  # [c]
            local = length == 1 or config.anchor_interval == 1
            sources = candidates if local else segment_sources
            new, assign = merge_into_context(flat[sources], flat[centres], config.context_weight)
            merged[centres] = new.to(merged.dtype)
            keep[centres] = True
            first = merged_into[sources] < 0
            merged_into[sources[first]] = centres[assign[first]]
        start += length
    merged_into[keep] = -1
    return Selection(keep, merged, merged_into)


def apply_fastvid(model: nn.Module, budget: float = 0.3, saliency: str = "attention", *, min_segments: int = 8,
                  cut_threshold: float = 0.9, context_ratio: float = 0.4, anchor_interval: int = 4,
                  context_weight: float = 0.6) -> nn.Module:
    """Install FastVID in place: round(budget * N_v) salient and merged context tokens per video, before the LLM."""
    if saliency is None:
        raise ValueError("FastVID ranks salient tokens by a saliency: pass saliency='attention' or 'norm'")
    config = FastVIDConfig(min_segments, cut_threshold, context_ratio, anchor_interval, context_weight)

    def video_fn(features: torch.Tensor, budget: float, scores: torch.Tensor) -> Selection:
        return fastvid_video(features, budget, scores, config)

    return install_pre_llm(model, "fastvid", "FastVID", budget, video_fn, saliency=saliency)
