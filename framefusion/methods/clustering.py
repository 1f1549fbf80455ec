"""Clustering pieces shared by the methods that merge video tokens (FastVID, HoliTom): density-peak centres by
k-nearest-neighbour density (DPC-kNN), and assignment of tokens to centres. Pure tensor functions.

They work on the tokens of one frame or one segment (n up to a few hundred); the n x n distances are part of
those methods' definition, within a frame, never over the whole prompt.
"""

from __future__ import annotations

import math

import torch

TIE_BREAK = 1e-6  # the references add U(0, 1) * 1e-6 noise to the density; here a deterministic ramp by index


def pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """x [n, d] -> [n, n] float32 Euclidean distances scaled by 1 / sqrt(d) (the references' scale)."""
    x = x.float()
    return torch.cdist(x[None], x[None])[0] / math.sqrt(x.shape[-1])


def dpc_knn_scores(x: torch.Tensor, k: int) -> torch.Tensor:
    """Density-peak score [n] = rho * delta of tokens x [n, d] (higher: a better cluster centre).

    rho_j = exp(-mean of the squared distances to its k nearest tokens, itself included) plus a tie-break ramp
    (in float64, so that the ramp survives densities near 1); delta_j = distance to the nearest denser token, and
    for the densest token the largest distance between any two tokens (as the FastVID and HoliTom code).
    """
    n = x.shape[0]
    distance = pairwise_distance(x).double()  # [n, n]
    k = max(1, min(k, n))
    nearest = torch.topk(distance, k, dim=-1, largest=False).values  # [n, k], 0 (itself) first
    rho = torch.exp(-(nearest**2).mean(dim=-1))
    rho = rho + TIE_BREAK * torch.arange(n, 0, -1, device=x.device, dtype=torch.float64) / n  # earlier win ties
    denser = rho[None, :] > rho[:, None]  # [n, n]: column token denser than row token
    masked = torch.where(denser, distance, torch.full_like(distance, math.inf))
    delta = masked.min(dim=-1).values
    densest = ~denser.any(dim=-1)
    delta = torch.where(densest, distance.max(), delta)
    return (rho * delta).float()


def authors_density_scores(x: torch.Tensor, k: int) -> torch.Tensor:
    """DPC-kNN score [n] of tokens x [n, d] in float32 exactly as the FastVID and HoliTom code computes it, with
    their U(0, 1) * 1e-6 density noise left out (exact ties are then left to top-k; budget_rule="authors")."""
    x = x.float()
    distance = pairwise_distance(x)  # [n, n]
    nearest = torch.topk(distance, max(1, min(k, x.shape[0])), dim=-1, largest=False).values
    density = torch.exp(-(nearest ** 2).mean(dim=-1))  # [n]
    denser = (density[None, :] > density[:, None]).float()  # [n, n]: column token denser than row token
    return (distance * denser + distance.max() * (1 - denser)).min(dim=-1).values * density


def top_indices(score: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` highest-scoring indices [count], in ascending index order (ties to the lower index)."""
    if count <= 0:
        return torch.zeros(0, dtype=torch.long, device=score.device)
    order = torch.argsort(score, descending=True, stable=True)[:count]
    return torch.sort(order).values


def nearest_centre(x: torch.Tensor, centres: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """For tokens x [n, d], the index [n] of the nearest of centres [c, d] ("cosine": most similar direction;
    "euclidean": smallest distance). Ties go to the lower centre index."""
    if metric == "cosine":
        a = torch.nn.functional.normalize(x.float(), dim=-1)
        b = torch.nn.functional.normalize(centres.float(), dim=-1)
        return torch.argmax(a @ b.T, dim=-1)
    return torch.argmin(torch.cdist(x.float()[None], centres.float()[None])[0], dim=-1)
