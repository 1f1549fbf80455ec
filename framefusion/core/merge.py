"""The merge step as tensor functions: predecessor similarity, candidate choice, transitive group means."""

from __future__ import annotations

import math

import torch


def chain_order(video: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Permutation sorting tokens (given in time order) into (video, patch) chains, time order kept inside each.

    video, patch: [n] long. Returns [n] long.
    """
    if video.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=video.device)
    key = video * (int(patch.max()) + 1) + patch
    return torch.sort(key, stable=True).indices


def predecessor_similarity(hidden: torch.Tensor, chain_key: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each chain element with the element before it in the same chain.

    hidden: [n, D] states of the tokens in chain order; chain_key: [n] (equal keys = same (video, patch)).
    Returns [n] float32; -inf where a token has no predecessor (first alive token of its chain).
    """
    sim = torch.full((hidden.shape[0],), -math.inf, dtype=torch.float32, device=hidden.device)
    if hidden.shape[0] < 2:
        return sim
    states = hidden.float()
    same_chain = chain_key[1:] == chain_key[:-1]  # [n-1]
    pair_sim = torch.nn.functional.cosine_similarity(states[1:], states[:-1], dim=-1)
    sim[1:] = torch.where(same_chain, pair_sim, sim[1:])
    return sim


def rank_descending(score: torch.Tensor, tiebreak: torch.Tensor) -> torch.Tensor:
    """Indices ordering `score` from high to low; equal scores go by ascending `tiebreak` (sequence position)."""
    by_tiebreak = torch.argsort(tiebreak, stable=True)
    return by_tiebreak[torch.argsort(score[by_tiebreak], descending=True, stable=True)]


def choose_merges(sim: torch.Tensor, threshold: float, cap: float, position: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """Pick which tokens merge into their predecessor at one merge step.

    sim: [n] from predecessor_similarity; position: [n] sequence positions (tie-break).
    Returns (merged [n] bool, ratio = candidates / n, capped). When ratio < cap every candidate merges;
    otherwise only the floor(cap * n) most similar do and `capped` is True.
    """
    n = sim.numel()
    candidates = sim >= threshold  # -inf never passes
    num_candidates = int(candidates.sum())
    ratio = num_candidates / n if n else 0.0
    if ratio < cap:
        return candidates, ratio, False
    k = math.floor(cap * n)
    merged = torch.zeros_like(candidates)
    if k > 0:
        masked = torch.where(candidates, sim, torch.full_like(sim, -math.inf))
        merged[rank_descending(masked, position)[:k]] = True
    return merged, ratio, True


def group_heads(merged: torch.Tensor) -> torch.Tensor:
    """For tokens in chain order, the index of the group each joins: the last unmerged token at or before it.

    merged: [n] bool (a chain's first token is never merged, so groups never cross chains). Returns [n] long.
    """
    index = torch.arange(merged.numel(), device=merged.device)
    marks = torch.where(merged, torch.full_like(index, -1), index)
    return torch.cummax(marks, dim=0).values


def merge_groups(hidden: torch.Tensor, rows: torch.Tensor, merged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each group into its first token and return the rows to drop.

    hidden: [n_alive, D] current states (all alive tokens); rows: [n] row in `hidden` of each chain-ordered
    vision token; merged: [n] bool. Returns (new hidden [n_alive, D], dropped rows [n_merged] long).
    A run of k merged tokens after token a leaves a holding the plain mean of the k + 1 states.
    """
    members = torch.nonzero(merged).flatten()
    if members.numel() == 0:
        return hidden, members
    heads = group_heads(merged)[members]  # chain index of each member's group head
    head_rows = rows[heads]
    member_rows = rows[members]
    unique_heads, inverse = torch.unique(head_rows, return_inverse=True)
    sums = hidden[unique_heads].float()  # [g, D] the heads' own states
    sums.index_add_(0, inverse, hidden[member_rows].float())
    counts = torch.bincount(inverse, minlength=unique_heads.numel()).to(sums.dtype) + 1.0
    hidden = hidden.clone()
    hidden[unique_heads] = (sums / counts[:, None]).to(hidden.dtype)
    return hidden, member_rows
