"""The prune step as tensor functions: attention importance of the last query rows and top-k selection."""

from __future__ import annotations

import torch

from framefusion.core.merge import rank_descending


def attention_importance(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax attention the last q query rows give each key, averaged over heads and over the q rows.

    queries: [q, H, d] (post-rotary) of the last q of the n positions whose keys are given: row j sits at key
    index n - q + j and, causally, attends to keys 0 .. n - q + j only (its softmax runs over those).
    keys: [H_kv, n, d] (post-rotary), H a multiple of H_kv (grouped-query attention shares each key head among
    H / H_kv query heads). Returns [n] float32. Costs O(q * H * n * d): q rows of the attention matrix, never n x n.
    """
    rows, heads, dim = queries.shape
    kv_heads, n, _ = keys.shape
    grouped = queries.float().reshape(rows, kv_heads, heads // kv_heads, dim)  # [q, H_kv, G, d]
    scores = torch.einsum("qkgd,knd->kgqn", grouped, keys.float()) * scaling  # [H_kv, G, q, n]
    if rows > 1:
        row_position = torch.arange(n - rows, n, device=keys.device)  # [q]
        hidden_keys = torch.arange(n, device=keys.device)[None, :] > row_position[:, None]  # [q, n] future keys
        scores = scores.masked_fill(hidden_keys, float("-inf"))
    return torch.softmax(scores, dim=-1).mean(dim=(0, 1, 2))


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
