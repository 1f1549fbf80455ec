"""VidCom2 (arXiv 2505.14454): frame-adaptive compression of the projected video features, before the LLM.

Per video, on its features [T, P, D]:
1. keep the half of the channels with the lowest variance over all the video's tokens;
2. L2-normalise and score every token by a multi-scale Gaussian similarity (bandwidths 2^-3..2^1) to the
   video centre (mean of all tokens) and to its frame centre (mean of the frame's tokens);
3. give frame f the retention rate budget * (1 + p_f - mean(p)), p = softmax over frames, temperature 0.01,
   of the frame's distinctiveness (minus its mean video similarity), clipped at 1;
4. keep in each frame the tokens least similar to both centres (the outliers).

budget_rule="matched" (the default), deliberately unlike the authors' code: the per-frame counts are a
largest-remainder apportionment of round(budget * T * P) tokens (rate mass cut off by the clip at 1 goes to the
other frames, water-filling), so they sum to the target exactly. budget_rule="authors": the authors' arithmetic
(`select_outlier_indices` in xuyang-liu16/VidCom2 `token_compressor/vidcom2/vidcom2.py`, branch qwen @a85d485),
each frame rounded on its own, round(rate_f * P) clamped to >= 1, so the video keeps what that sums to (at R =
0.25 on 8 frames of 16 tokens: 35 tokens where "matched" keeps exactly 32); the statistics report the achieved
kept_ratio. Checked token for token against that code on a tiny Qwen2-VL (benchmarks/against_authors/vidcom2).
Their Qwen code scores the features in the model's dtype; here in float32 (identical in float32).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from framefusion.methods.common import check_budget_rule
from framefusion.methods.oneshot import install_pre_llm

BANDWIDTHS = tuple(2.0**k for k in range(-3, 2))  # alpha in exp(-d^2 / (2 alpha))
TEMPERATURE = 0.01
CHANNEL_RATIO = 0.5


def low_variance_channels(features: torch.Tensor, ratio: float = CHANNEL_RATIO) -> torch.Tensor:
    """Indices [floor(ratio * D)] of the channels of features [n, D] with the lowest variance over the n tokens."""
    variance = features.float().var(dim=0, unbiased=False)  # [D]
    count = max(1, int(features.shape[-1] * ratio))
    return torch.topk(variance, count, largest=False).indices


def multiscale_gaussian(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Sum over BANDWIDTHS of exp(-|x - centre|^2 / (2 alpha)); x [..., d], centre broadcastable. Returns [...]."""
    distance = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-distance / (2.0 * alpha)) for alpha in BANDWIDTHS)


def centre_similarities(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """frames [T, P, d] (selected channels) -> (video score [T, P], frame score [T, P]) after L2 normalisation."""
    x = torch.nn.functional.normalize(frames.float(), dim=-1)
    video_centre = x.mean(dim=(0, 1), keepdim=True)  # [1, 1, d]
    frame_centre = x.mean(dim=1, keepdim=True)  # [T, 1, d]
    return multiscale_gaussian(x, video_centre), multiscale_gaussian(x, frame_centre)


def frame_retention_rates(distinctiveness: torch.Tensor, budget: float) -> torch.Tensor:
    """[T] rate budget * (1 + p_f - mean(p)), p = softmax(distinctiveness / TEMPERATURE), clipped at 1."""
    d = distinctiveness.float()
    p = torch.softmax((d - d.max()) / TEMPERATURE, dim=0)
    return (budget * (1.0 + p - p.mean())).clamp(max=1.0)


def frame_budgets(weights: torch.Tensor, capacity: int, target: int) -> torch.Tensor:
    """Apportion `target` tokens over frames in proportion to weights [T] > 0, each in [1, capacity].

    Water-filling: frames whose share exceeds `capacity` are capped and their excess is shared among the
    others in proportion to their weights; then floors plus largest remainders make the total exactly
    `target` (clamped to [T, T * capacity]). Returns [T] long. Loops run over frames, never over tokens.
    """
    frames = weights.numel()
    target = min(max(int(target), frames), frames * capacity)
    w = weights.double().clamp(min=1e-12)
    share = w / w.sum() * target
    capped = torch.zeros(frames, dtype=torch.bool, device=w.device)
    for _ in range(frames):
        over = (share > capacity) & ~capped
        if not over.any():
            break
        capped |= over
        free = ~capped
        room = target - capacity * int(capped.sum())
        share = torch.where(capped, torch.full_like(share, float(capacity)), w / w[free].sum() * room)
    counts = share.floor().long().clamp(1, capacity)
    residual = share - counts  # > 0: owed a token, < 0: got one from the floor of 1
    while (missing := target - int(counts.sum())) != 0:
        if missing > 0:
            eligible = counts < capacity
            order = torch.argsort(torch.where(eligible, residual, torch.full_like(residual, -math.inf)),
                                  descending=True, stable=True)[:missing]
            order = order[eligible[order]]
            counts[order] += 1
        else:
            eligible = counts > 1
            order = torch.argsort(torch.where(eligible, residual, torch.full_like(residual, math.inf)),
                                  stable=True)[:-missing]
            order = order[eligible[order]]
            counts[order] -= 1
        residual = share - counts
    return counts


def keep_lowest_per_frame(score: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """score [T, P], counts [T] -> keep [T, P] bool: the counts[f] lowest-scoring tokens of each frame f.

    Ties go to the lower patch index.
    """
    frames, patches = score.shape
    order = torch.argsort(score, dim=1, stable=True)  # [T, P] patch indices, lowest score first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(patches, device=score.device).expand(frames, patches))
    return rank < counts.to(score.device)[:, None]


def authors_frame_counts(rates: torch.Tensor, patches: int) -> torch.Tensor:
    """The authors' per-frame counts [T] long: each rate [T] times P rounded on its own (half to even), >= 1."""
    return torch.round(rates * patches).long().clamp(1, patches)


def vidcom2_video_mask(features: torch.Tensor, budget: float, budget_rule: str = "matched") -> torch.Tensor:
    """features [T, P, D] of one video -> keep [T * P] bool holding round(budget * T * P) tokens (>= 1 a frame);
    budget_rule="authors": the sum of the authors' per-frame counts instead."""
    frames, patches, _ = features.shape
    channels = low_variance_channels(features.reshape(frames * patches, -1))
    video_score, frame_score = centre_similarities(features[..., channels])
    rates = frame_retention_rates(-video_score.mean(dim=1), budget)
    if budget_rule == "authors":
        counts = authors_frame_counts(rates, patches)
    else:
        counts = frame_budgets(rates, patches, round(budget * frames * patches))
    return keep_lowest_per_frame(video_score + frame_score, counts).flatten()


def apply_vidcom2(model: nn.Module, budget: float = 0.3, budget_rule: str = "matched") -> nn.Module:
    """Install VidCom2 in place: keep round(budget * N_v) video tokens per video before layer 0 (budget_rule
    "authors": the authors' per-frame rounding)."""
    check_budget_rule(budget_rule)

    def video_fn(features: torch.Tensor, retention: float) -> torch.Tensor:
        return vidcom2_video_mask(features, retention, budget_rule)

    return install_pre_llm(model, "vidcom2", "VidCom2", budget, video_fn)
