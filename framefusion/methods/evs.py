"""EVS, "efficient video sampling" (vLLM / SGLang `--video-pruning-rate`): drop video tokens that repeat the
same patch of the previous frame, before the LLM.

Per video: every token of the first frame is kept; every other token is scored by its dissimilarity
1 - cos(x, same patch of the previous frame) on the projected video features, and the most dissimilar tokens
of the whole video (not per frame) fill the rest of the budget. Pruning rate q = 1 - budget.
"""

from __future__ import annotations

import torch
from torch import nn

from framefusion.core.merge import rank_descending
from framefusion.methods.oneshot import install_pre_llm

FIRST_FRAME_SCORE = 255.0  # above any 1 - cos (at most 2): the first frame always ranks first, as in vLLM


def evs_keep_count(num_frames: int, tokens_per_frame: int, budget: float) -> int:
    """Tokens one video keeps: round(budget * T * P), at least the whole first frame, at most all."""
    total = num_frames * tokens_per_frame
    return min(total, max(tokens_per_frame, round(budget * total)))


def evs_dissimilarity(features: torch.Tensor) -> torch.Tensor:
    """features [T, P, D] of one video -> [T, P] float32: 1 - cos with the same patch one frame earlier.

    The first frame scores FIRST_FRAME_SCORE so that it is always kept.
    """
    x = features.float()
    score = torch.full(x.shape[:2], FIRST_FRAME_SCORE, dtype=torch.float32, device=x.device)
    score[1:] = 1.0 - torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1)
    return score


def evs_retention_mask(features: torch.Tensor, budget: float) -> torch.Tensor:
    """features [T, P, D] of one video -> keep [T * P] bool: the top evs_keep_count tokens by dissimilarity.

    Ties go to the earlier token (frame-major order), like vLLM's stable descending sort.
    """
    frames, patches = features.shape[:2]
    score = evs_dissimilarity(features).flatten()
    order = rank_descending(score, torch.arange(score.numel(), device=score.device))
    keep = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    keep[order[:evs_keep_count(frames, patches, budget)]] = True
    return keep


def apply_evs(model: nn.Module, budget: float = 0.3) -> nn.Module:
    """Install EVS in place: keep round(budget * N_v) video tokens per video before layer 0."""
    return install_pre_llm(model, "evs", "EVS", budget, evs_retention_mask)
