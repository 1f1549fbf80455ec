"""The prune step as tensor functions: last-query attention importance and top-k selection."""

from __future__ import annotations

import torch

from framefusion.merge import rank_descending


def last_query_importance(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax attention of one query row over all keys, averaged over heads.

    query: [H, d] (post-rotary, the prompt's last position); keys: [H_kv, n, d] (post-rotary), H a multiple
    of H_kv (grouped-query attention shares each key head among H / H_kv query heads). Returns [n] float32.
    Costs O(H * n * d): one row of the attention matrix, never n x n.
    """
    heads, dim = query.shape
    kv_heads, n, _ = keys.shape
    grouped = query.float().view(kv_heads, heads // kv_heads, dim)  # [H_kv, G, d]
    scores = torch.einsum("kgd,knd->kgn", grouped, keys.float()) * scaling  # [H_kv, G, n]
    return torch.softmax(scores, dim=-1).mean(dim=(0, 1))


def keep_most_important(importance: torch.Tensor, keep: int, position: torch.Tensor) -> torch.Tensor:
    """Boolean mask [n] of the `keep` most important tokens (ties go to the earlier position)."""
    mask = torch.zeros(importance.shape, dtype=torch.bool, device=importance.device)
    if keep > 0:
        mask[rank_descending(importance, position)[:keep]] = True
    return mask


def keep_one_per_video(importance: torch.Tensor, video: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Boolean mask [n] keeping only the most important token of each video (the smallest allowed count)."""
    ranked = rank_descending(importance, position)  # most important first
    ranked = ranked[torch.argsort(video[ranked], stable=True)]  # grouped by video, importance order kept
    ranked_video = video[ranked]
    first = torch.ones_like(ranked_video, dtype=torch.bool)
    first[1:] = ranked_video[1:] != ranked_video[:-1]
    mask = torch.zeros(importance.shape, dtype=torch.bool, device=importance.device)
    mask[ranked[first]] = True
    return mask
