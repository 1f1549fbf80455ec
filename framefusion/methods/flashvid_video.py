"""FlashVID's vision-side stage as tensor functions, for one video's projected features [T, P, D] and saliency
[T, P]: attention-and-diversity token selection (ADTS), tree-based spatiotemporal token merging (TSTM) and the
density-peak clustering of the merged trees. framefusion/methods/flashvid.py states the algorithm, the budget
and every deviation from the authors' code.

The loops run over segments, frames and greedy picks (ADTS is a farthest-point selection: each pick depends on
the ones before; every pick is one vectorised step over all frames and tokens), never over tokens.
"""

from __future__ import annotations

import math

import torch

from framefusion.methods.clustering import dpc_knn_scores, nearest_centre, top_indices
from framefusion.methods.fastvid import (
    frame_transitions,
    segment_lengths,
    top_per_frame,
)
from framefusion.methods.oneshot import Selection

SELECTIONS = ("attn_div", "attn_div_v2", "attn", "div")  # the authors' TokenSelectionMethod values
SALIENCY_SCALE = 1e6  # the authors multiply the saliency by 1e6 before calibrating distances with it
DENSITY_NEIGHBOURS = 7  # kNN of the density, min(clusters, 7)
SOFT_FLOOR = -1.0 + 1e-6  # the lowest similarity the soft threshold may fall to (-1 marks excluded tokens)
TREE_WEIGHTS = ("mean", "authors")  # a tree's token: the mean of its members, or the authors' sum / (1 + children)


# ---- ADTS: attention- and diversity-based token selection ----------------------------------------------------
def calibrated_distance(features: torch.Tensor, saliency: torch.Tensor | None, selection: str,
                        lengths: list[int]) -> torch.Tensor:
    """[T, P, P] float32: cosine distance between each frame's tokens, column n weighted by token n's scaled
    saliency ("attn_div"), also by its event relevance ("attn_div_v2": the dot product with the mean of its
    segment's frame means), or unweighted ("div")."""
    x = features.float()
    unit = x / x.norm(dim=-1, keepdim=True)
    distance = 1.0 - unit @ unit.transpose(1, 2)  # [T, P, P]
    if selection in ("attn_div", "attn_div_v2"):
        distance = distance * (saliency.float() * SALIENCY_SCALE)[:, None, :]
    if selection == "attn_div_v2":
        relevance = torch.empty(x.shape[:2], dtype=x.dtype, device=x.device)  # [T, P]
        start = 0
        for length in lengths:  # a loop over segments
            frames = x[start:start + length]  # [S, P, D]
            relevance[start:start + length] = (frames @ frames.mean(dim=1).T).mean(dim=-1)  # mean over its frames
            start += length
        distance = distance * relevance[:, None, :]
    return distance


def diverse_picks(distance: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """distance [T, P, P], counts [T] -> [T, P] bool: per frame, counts[f] greedy farthest-point picks.

    The first pick maximises the distance to its nearest other token (the second smallest of its column); each
    next one maximises the distance to the nearest token picked so far; a picked token is never picked again;
    ties go to the lower index."""
    frames, patches, _ = distance.shape
    steps = int(counts.max()) if frames else 0
    chosen = torch.zeros(frames, patches, dtype=torch.bool, device=distance.device)
    if steps == 0:
        return chosen
    rows = torch.arange(frames, device=distance.device)
    counts = counts.to(distance.device)
    picked = torch.zeros_like(chosen)  # every frame runs the same number of steps; `chosen` keeps its first counts
    if patches > 1:
        score = torch.topk(distance, 2, dim=1, largest=False).values[:, 1, :]  # [T, P]
    else:
        score = torch.zeros(frames, 1, device=distance.device)
    nearest = None
    for step in range(steps):  # sequential by definition: one vectorised step per pick
        if nearest is not None:
            score = nearest.masked_fill(picked, -math.inf)
        pick = torch.argmax(score, dim=-1)  # [T]
        picked[rows, pick] = True
        chosen[rows, pick] |= step < counts
        row = distance[rows, pick]  # [T, P] distances from the new pick (its row)
        nearest = row if nearest is None else torch.minimum(nearest, row)
    return chosen


def select_tokens(features: torch.Tensor, saliency: torch.Tensor | None, counts: torch.Tensor, lengths: list[int],
                  selection: str) -> torch.Tensor:
    """[T, P] bool: the counts[f] tokens ADTS selects in each frame f ("attn": the most salient)."""
    if selection == "attn":
        return top_per_frame(saliency.float(), counts)
    return diverse_picks(calibrated_distance(features, saliency, selection, lengths), counts)


# ---- TSTM: tree-based spatiotemporal merging ----------------------------------------------------------------
def tree_links(features: torch.Tensor, free: torch.Tensor, threshold: float, lower_bound: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """features [S, P, D], free [S, P] (not selected) of one segment -> (merge [S, P] bool, parent [S, P] long).

    Each free token of frame t >= 1 links to its most cosine-similar free token of frame t - 1 (its parent;
    ties to the lower index) and merges into it when the similarity exceeds `threshold`, lowered (to the k-th
    largest similarity, k = S P - lower_bound, merging those strictly above it) when fewer than `lower_bound`
    tokens would be left."""
    segment, patches, _ = features.shape
    x = features.float()
    unit = x / x.norm(dim=-1, keepdim=True)
    similarity = unit[1:] @ unit[:-1].transpose(1, 2)  # [S - 1, P, P]: token n of frame t + 1 vs m of frame t
    similarity = similarity.masked_fill(~free[1:, :, None], -1.0).masked_fill(~free[:-1, None, :], -1.0)
    best, parent = similarity.max(dim=-1)  # [S - 1, P]
    best = torch.cat([best.new_full((1, patches), -1.0), best])  # [S, P]: the first frame has no parent
    parent = torch.cat([parent.new_zeros(1, patches), parent])
    merge = best > threshold
    if int((~merge).sum()) < lower_bound:
        k = segment * patches - lower_bound
        soft = float(torch.topk(best.flatten(), k).values[-1]) if k > 0 else math.inf
        merge = best > max(soft, SOFT_FLOOR)
    return merge, parent


def tree_links_flat(merge: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """merge, parent [S, P] -> [S * P] long: the flat index each token links to (itself where it does not merge)."""
    segment, patches = merge.shape
    flat = torch.arange(segment * patches, device=merge.device)
    return torch.where(merge.flatten(), (flat // patches - 1) * patches + parent.flatten(), flat)


def tree_roots(merge: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """merge, parent [S, P] -> [S * P] long: the root (flat index) of each token's tree, by pointer jumping."""
    link = tree_links_flat(merge, parent)
    for _ in range(max(1, math.ceil(math.log2(max(merge.shape[0], 2))))):
        link = link[link]
    return link


def tree_states(x: torch.Tensor, merge: torch.Tensor, parent: torch.Tensor, root: torch.Tensor, weights: str
                ) -> torch.Tensor:
    """x [S * P, D] -> [S * P, D]: at each root, its tree's sum over its size ("mean") or over 1 + its direct
    children ("authors": their count adds one per merged child, not the child's own count, so a chain of k equal
    tokens comes out at k / 2 times their value)."""
    total = torch.zeros_like(x).index_add_(0, root, x)
    if weights == "mean":
        size = torch.bincount(root, minlength=x.shape[0])
    else:
        size = 1 + torch.bincount(tree_links_flat(merge, parent)[merge.flatten()], minlength=x.shape[0])
    return total / size.clamp(min=1)[:, None]


# ---- clustering of the trees ----------------------------------------------------------------------------------
def cluster_counts(roots: torch.Tensor, total: int, exact: bool) -> torch.Tensor | None:
    """roots [S] long (trees per frame), `total` context tokens of the segment -> clusters per frame [S], or None
    when every tree is kept (total >= the trees).

    exact=False (the authors): ceil(n_f * total / sum n) in floating point; exact=True: the same ceilings, then
    one token less for the frames that overshot most, first those that keep more than one, until the sum is
    `total` (exact integer arithmetic; ties: the later frame gives one up)."""
    trees = int(roots.sum())
    if total >= trees:
        return None
    if not exact:
        ratio = total / trees
        return torch.tensor([math.ceil(n * ratio) for n in roots.tolist()], dtype=torch.long)
    roots = roots.long().cpu()
    counts = (roots * total + trees - 1) // trees  # [S] ceilings
    overshoot = counts * trees - roots * total  # [S] numerators of ceil - quota, in [0, trees)
    excess = int(counts.sum()) - total
    frames = torch.arange(roots.numel())
    key = (counts <= 1).long() * 4 * trees * (roots.numel() + 1) - overshoot * (roots.numel() + 1) - frames
    order = torch.argsort(key)  # count > 1 first, then the largest overshoot, then the later frame
    order = order[overshoot[order] > 0][:excess]
    counts[order] -= 1
    return counts


def cluster_frame(x: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trees x [n, D] of one frame -> (centre [n] long: the centre (0..n-1) each joins, mean [n, D]: a centre's
    cluster mean, members included). DPC-kNN centres with k = min(count, 7); the others join the nearest
    (Euclidean)."""
    n = x.shape[0]
    if count >= n:
        return torch.arange(n, device=x.device), x
    centres = top_indices(dpc_knn_scores(x, min(count, DENSITY_NEIGHBOURS)), count)  # [c] ascending
    centre = centres[nearest_centre(x, x[centres], "euclidean")]  # [n]
    centre[centres] = centres
    total = torch.zeros_like(x).index_add_(0, centre, x)
    size = torch.bincount(centre, minlength=n).clamp(min=1)
    return centre, total / size[:, None]


def merge_segment(features: torch.Tensor, chosen: torch.Tensor, context: int, lower_bound: int, threshold: float,
                  exact: bool, tree_weights: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """One segment's free tokens -> `context` merged tokens: (owner [S * P] long: the kept token each free token
    ends in, -1 if none, chosen tokens -1 too; merged [S * P, D] float32: the kept merged tokens' states)."""
    segment, patches, dim = features.shape
    free = ~chosen
    merge, parent = tree_links(features, free, threshold, lower_bound)
    root = tree_roots(merge, parent)  # [S * P]
    x = features.float().reshape(-1, dim)
    tree = tree_states(x, merge, parent, root, tree_weights)  # [S * P, D] each tree's token at its root
    is_root = (root == torch.arange(x.shape[0], device=x.device)) & free.flatten()
    counts = cluster_counts(is_root.view(segment, patches).sum(dim=1), context, exact)
    owner = torch.arange(x.shape[0], device=x.device)  # per root: the kept token it ends in
    merged = tree
    if counts is not None:
        merged = tree.clone()
        for f in range(segment):  # a loop over frames
            ids = torch.nonzero(is_root[f * patches:(f + 1) * patches]).flatten() + f * patches  # [n] its trees
            if ids.numel() == 0:
                continue
            if int(counts[f]) == 0:  # exact rule only: a frame left without a context token drops its trees
                owner[ids] = -1
                continue
            centre, mean = cluster_frame(tree[ids], int(counts[f]))
            owner[ids] = ids[centre]
            merged[ids] = mean
    owner = torch.where(free.flatten(), owner[root], torch.full_like(owner, -1))
    return owner, merged


# ---- one video ----------------------------------------------------------------------------------------------
def flashvid_video(features: torch.Tensor, saliency: torch.Tensor | None, selected: torch.Tensor,
                   context: torch.Tensor, *, selection: str = "attn_div", temporal_threshold: float = 0.8,
                   segment_threshold: float = 0.9, min_segments: int = 8, exact: bool = True,
                   tree_weights: str = "mean") -> Selection:
    """features [T, P, D], saliency [T, P] of one video, per-frame counts selected [T] (ADTS) and context [T]
    (its share of merged tokens) -> the Selection over its T * P tokens (frame-major).

    Kept: the selected tokens (unchanged) and one token per cluster of trees (the mean of the cluster's tree
    tokens, at the centre tree's root). merged_into: the kept token a removed one ends in (-1: pruned)."""
    frames, patches, dim = features.shape
    n, device = frames * patches, features.device
    if int((selected + context).sum()) >= n:
        return Selection(torch.ones(n, dtype=torch.bool, device=device))
    lengths = segment_lengths(frame_transitions(features), min_segments, segment_threshold)
    chosen = select_tokens(features, saliency, selected, lengths, selection)  # [T, P]
    keep = chosen.flatten().clone()
    merged = features.reshape(n, dim).clone()
    merged_into = torch.full((n,), -1, dtype=torch.long, device=device)
    start = 0
    for length in lengths:  # a loop over segments
        span = slice(start * patches, (start + length) * patches)
        total = int(context[start:start + length].sum())
        if total > 0:  # without context tokens the segment keeps its selected tokens only
            lower_bound = int((selected + context)[start:start + length].sum())
            owner, states = merge_segment(features[start:start + length], chosen[start:start + length], total,
                                          lower_bound, temporal_threshold, exact, tree_weights)
            inside = owner >= 0
            owner = torch.where(inside, owner + start * patches, owner)
            kept = torch.unique(owner[inside])
            keep[kept] = True
            merged[kept] = states[kept - start * patches].to(merged.dtype)
            merged_into[span] = owner
        start += length
    merged_into[keep] = -1
    return Selection(keep, merged, merged_into)
