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

budget_rule="authors" follows the authors' Qwen2.5-VL code instead (LunarShen/FastVID @a40a109,
fastvid_qwen25vl/.../qwenvlutils/modeling_qwen2_5_vl.py, `Qwen2_5_VLForConditionalGeneration.forward`), the only
FastVID they ship for a Qwen-VL model, token for token (benchmarks/against_authors/fastvid: identical kept sets and
greedy ids on a tiny Qwen2.5-VL): int(P * budget) tokens a frame; per segment of n frames a context share
max(int(n int(P R) d), 1); inside a segment, a frame whose mean feature has cosine >= 0.95 with the next frame's
(their DySeg_ignore) gives its budget to the last frame of its run, the salient share is split evenly over the
remaining frames (the first ones take the remainder) and the context share over every p-th of them counted from
the segment end, each capped at P // 2 (what a cap cuts is lost: 0.19 kept at budget 0.25 on 16 temporal frames
of the harness clip); each anchor's context tokens absorb every other token of the segment that is not salient
(other anchors' context tokens included); tau defaults to their Qwen2.5-VL script's 0.84; the saliency is theirs
on Qwen-VL towers (the vision transformer's last block, per frame: softmax of the frame's mean query against each
LLM token's mean key, head mean), whatever adapters/vision_attention.py reads; the density has no noise (their
U(0, 1) * 1e-6 is fixed at 0 in the harness). Where their code fails, the choice here: at int(P * budget) = 1 a
one-frame segment has no salient token and their `torch.cat` of an empty list raises (budget 0.1 on 16-token
frames); here that segment keeps its context token only. int(P * budget) = 0 is a ValueError naming the smallest
budget. Their lmms-eval wrapper drops the fps it computes, so their runs used a 2-fps temporal position spacing;
here positions are transformers' for the given clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.core.patches import PatchStack
from framefusion.methods.clustering import (
    authors_density_scores,
    dpc_knn_scores,
    nearest_centre,
    top_indices,
)
from framefusion.methods.common import check_budget, check_budget_rule
from framefusion.methods.install import install_method
from framefusion.methods.oneshot import (
    OneShotReduction,
    Selection,
    check_saliency,
    install_pre_llm,
    keep_per_video,
    saliency_source,
)
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


def absorb(flat: torch.Tensor, sources: torch.Tensor, centres: torch.Tensor, weight: float, merged: torch.Tensor,
           keep: torch.Tensor, merged_into: torch.Tensor) -> None:
    """Merge tokens `sources` into the context tokens `centres` (indices into flat [N, D]), in place: the centres'
    merged features and keep flags, and for each source not merged before, the centre it joined."""
    new, assign = merge_into_context(flat[sources], flat[centres], weight)
    merged[centres] = new.to(merged.dtype)
    keep[centres] = True
    first = merged_into[sources] < 0
    merged_into[sources[first]] = centres[assign[first]]


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
            absorb(flat, sources, centres, config.context_weight, merged, keep, merged_into)
        start += length
    merged_into[keep] = -1
    return Selection(keep, merged, merged_into)


# ---- the authors' Qwen2.5-VL procedure (budget_rule="authors") -----------------------------------------------
AUTHORS_CUT_THRESHOLD = 0.84  # tau of the authors' Qwen2.5-VL script (their LLaVA scripts: 0.9)
AUTHORS_SKIP_THRESHOLD = 0.95  # their DySeg_ignore: a frame this similar to the next one gives its budget on


def authors_segments(features: torch.Tensor, min_segments: int, cut_threshold: float) -> list[int]:
    """Segment lengths as the authors' code cuts them: the min_segments - 1 lowest transitions and all < tau."""
    transitions = frame_transitions(features)
    if min_segments - 1 > transitions.numel():
        raise ValueError(f"FastVID with budget_rule='authors' needs at least min_segments = {min_segments} frames "
                         f"(the authors' top-k of the {transitions.numel()} transitions fails); this video has "
                         f"{features.shape[0]}")
    return segment_lengths(transitions, min_segments, cut_threshold)


def split_evenly(total: int, parts: int) -> list[int]:
    """total split over parts, the first ones taking the remainder (the authors' chunking)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def authors_frame_counts(features: torch.Tensor, patches: int, budget: float, config: FastVIDConfig
                         ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(salient [T], context [T], segment lengths) by the authors' arithmetic: int(P * budget) a frame, a segment's
    context share max(int(n * d), 1), frames nearly equal to the next (cosine >= the skip threshold) give their
    budget to the last of their run, context on every p-th such frame counted from the segment end, at most P // 2."""
    frames = features.shape[0]
    per_frame = int(patches * budget)
    if per_frame < 1:
        raise ValueError(f"FastVID with budget_rule='authors' keeps int({patches} * {budget:g}) = 0 tokens a frame: "
                         f"below the authors' arithmetic (their code fails); use a budget >= 1/{patches} or "
                         "budget_rule='matched'")
    lengths = authors_segments(features, config.min_segments, config.cut_threshold)
    g = torch.nn.functional.normalize(features.float().mean(dim=1), dim=-1)  # [T, D]
    salient = torch.zeros(frames, dtype=torch.long)
    context = torch.zeros(frames, dtype=torch.long)
    start = 0
    for length in lengths:  # loops over segments and their frames, never over tokens
        retain = per_frame * length
        ctx_total = max(int(retain * config.context_ratio), 1)
        sal_total = retain - ctx_total
        if length == 1:
            salient[start], context[start] = sal_total, ctx_total
            start += 1
            continue
        similar = (g[start:start + length - 1] * g[start + 1:start + length]).sum(dim=-1)  # [length - 1]
        cuts = torch.nonzero(similar < AUTHORS_SKIP_THRESHOLD).flatten().tolist()
        ends = cuts + [length - 1]  # the frames that stay: the last of each run of near-equal frames
        sal = split_evenly(sal_total, len(ends))
        anchors = (len(ends) + config.anchor_interval - 1) // config.anchor_interval
        ctx_share = split_evenly(ctx_total, anchors)
        ctx = [min(ctx_share[i // config.anchor_interval], patches // 2) if i % config.anchor_interval == 0 else 0
               for i in range(len(ends))][::-1]  # the anchors counted back from the segment end
        for j, end in enumerate(ends):
            f = start + end
            context[f] = min(ctx[j], patches // 2)
            salient[f] = min(sal[j], patches - int(context[f]))
        start += length
    return salient, context, lengths


def fastvid_video_authors(features: torch.Tensor, budget: float, saliency: torch.Tensor,
                          config: FastVIDConfig) -> Selection:
    """The authors' Qwen2.5-VL FastVID on one video: features [T, P, D], saliency [T, P] -> Selection (frame-major).

    Each anchor's context token c absorbs every token of its segment that is neither salient nor c itself (other
    anchors' context tokens included), w * x_c + (1 - w) * mean, w = max(1 / (|S| + 1), beta)."""
    frames, patches, dim = features.shape
    device = features.device
    salient, context, lengths = authors_frame_counts(features, patches, budget, config)
    flat = features.reshape(frames * patches, dim)
    keep = torch.zeros(frames * patches, dtype=torch.bool, device=device)
    merged = flat.clone()
    merged_into = torch.full((frames * patches,), -1, dtype=torch.long, device=device)
    start = 0
    for length in lengths:
        segment = torch.arange(start * patches, (start + length) * patches, device=device)
        is_salient = torch.zeros(length * patches, dtype=torch.bool, device=device)
        centres_of = []
        for f in range(start, start + length):
            top = torch.topk(saliency[f], int(salient[f])).indices if salient[f] > 0 else None
            if top is not None:
                is_salient[(f - start) * patches + top] = True
            if context[f] > 0:
                rest = torch.ones(patches, dtype=torch.bool, device=device)
                if top is not None:
                    rest[top] = False
                remaining = torch.nonzero(rest).flatten()
                chosen = torch.topk(authors_density_scores(features[f, remaining], DENSITY_NEIGHBOURS),
                                    int(context[f])).indices
                centres_of.append(f * patches + remaining[chosen.sort().values])
        keep[segment[is_salient]] = True
        for centres in centres_of:
            others = torch.ones(length * patches, dtype=torch.bool, device=device)
            others[is_salient] = False
            others[centres - start * patches] = False
            sources = segment[others]
            absorb(flat, sources, centres, config.context_weight, merged, keep, merged_into)
        start += length
    merged_into[keep] = -1
    return Selection(keep, merged, merged_into)


class _MeanQuerySaliency:
    """The authors' Qwen-VL saliency: in the vision transformer's last block, per frame, the softmax attention of
    the frame's mean query (after rotary) to each LLM token's mean key (its 2x2 patches), averaged over heads."""

    def __init__(self, model: nn.Module, patches: PatchStack):
        from framefusion.adapters import adapter_for
        from framefusion.adapters.vision_attention import qwen_vit_attention_probe

        module = adapter_for(model).multimodal_module(model)
        visual = getattr(module, "visual", None)
        if visual is None or not hasattr(visual, "blocks") or not hasattr(visual.blocks[-1].attn, "qkv"):
            raise ValueError("FastVID with budget_rule='authors' ranks by the authors' Qwen-VL vision saliency; this "
                             "model has no Qwen-VL vision transformer: use budget_rule='matched'")
        unit = visual.spatial_merge_size ** 2

        def mean_query(_attention, q, k, _kwargs, grid_thw) -> torch.Tensor:
            q, k = q.transpose(0, 1), k.transpose(0, 1)  # [H, n, d]
            heads, _, dim = q.shape
            scores = []
            for grid in grid_thw:  # one video after another, frames of h * w patches
                frames, patches_per_frame = int(grid[0]), int(grid[1] * grid[2])
                size = frames * patches_per_frame
                q_video, k_video = q[:, :size].reshape(heads, frames, patches_per_frame, dim), k[:, :size]
                q, k = q[:, size:], k[:, size:]
                mean_q = q_video.mean(dim=2, keepdim=True)  # [H, frames, 1, d]
                mean_k = k_video.reshape(heads, frames, patches_per_frame // unit, unit, dim).mean(dim=3)
                probs = torch.softmax(mean_q @ mean_k.transpose(-1, -2) / math.sqrt(dim), dim=-1)
                scores.append(probs.mean(dim=2).mean(dim=0).flatten())  # [frames * patches / unit]
            return torch.cat(scores)

        self.probe = qwen_vit_attention_probe(module, patches, mean_query, block=len(visual.blocks) - 1)

    def __call__(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        taken = self.probe.take()
        if taken.numel() != vision_hidden.shape[0]:
            raise RuntimeError(f"the vision encoder scored {taken.numel()} video tokens but the prompt has "
                               f"{vision_hidden.shape[0]}")
        return taken


def apply_fastvid(model: nn.Module, budget: float = 0.3, saliency: str = "attention", *, min_segments: int = 8,
                  cut_threshold: float | None = None, context_ratio: float = 0.4, anchor_interval: int = 4,
                  context_weight: float = 0.6, budget_rule: str = "matched") -> nn.Module:
    """Install FastVID in place: round(budget * N_v) salient and merged context tokens per video, before the LLM.

    cut_threshold None: 0.9 (the authors' LLaVA scripts), 0.84 with budget_rule="authors" (their Qwen2.5-VL
    script); budget_rule="authors": the authors' Qwen2.5-VL procedure (see the module docstring)."""
    if saliency is None:
        raise ValueError("FastVID ranks salient tokens by a saliency: pass saliency='attention' or 'norm'")
    check_budget_rule(budget_rule)
    if cut_threshold is None:
        cut_threshold = AUTHORS_CUT_THRESHOLD if budget_rule == "authors" else 0.9
    config = FastVIDConfig(min_segments, cut_threshold, context_ratio, anchor_interval, context_weight)
    if budget_rule == "matched":
        def video_fn(features: torch.Tensor, budget: float, scores: torch.Tensor) -> Selection:
            return fastvid_video(features, budget, scores, config)

        return install_pre_llm(model, "fastvid", "FastVID", budget, video_fn, saliency=saliency)
    check_budget(budget)
    check_saliency(saliency)

    def build(patches: PatchStack):
        score = _MeanQuerySaliency(model, patches) if saliency == "attention" else \
            saliency_source(model, "fastvid", saliency, patches)

        def make_reducer(layout, stack, device):
            return OneShotReduction(layout, stack.num_layers, device, "fastvid", 0,
                                    lambda lay, hidden, _attention: keep_per_video(
                                        lay, hidden, budget, lambda f, b, sc: fastvid_video_authors(f, b, sc, config),
                                        score(hidden)))

        return make_reducer

    return install_method(model, f"FastVID(budget={budget}, saliency={saliency}, budget_rule=authors)", build)
