"""EVS, "efficient video sampling" (vLLM / SGLang `--video-pruning-rate`): drop video tokens that repeat the
same patch of the previous frame, before the LLM.

Per video: every token of the first frame is kept; every other token is scored by its dissimilarity
1 - cos(x, same patch of the previous frame) on the projected video features, and the most dissimilar tokens
of the whole video (not per frame) fill the rest of the budget. Pruning rate q = 1 - budget.

Checked against vLLM's `vllm/multimodal/video_prune/evs.py` (@d750efb, `compute_retention_mask`;
benchmarks/against_authors/selection): the same kept set with budget_rule="authors". Deviations:
- Budget: "matched" (the default) keeps round(budget * T * P); vLLM keeps int(T * P * (1 - q)) (budget_rule=
  "authors"), one token fewer where the product has a fraction >= 0.5 (12 where round gives 13 of 128 at 0.1).
- Positions: kept tokens keep their dense positions and so does the text after the video; vLLM recomputes the
  mRoPE positions of the pruned prompt (`recompute_mrope_positions`: the text after a video continues from the
  video's start position plus its grid width), so the text after the video sits elsewhere there.
"""

from __future__ import annotations

import torch
from torch import nn

from framefusion.core.merge import rank_descending
from framefusion.methods.common import check_budget_rule
from framefusion.methods.oneshot import install_pre_llm

FIRST_FRAME_SCORE = 255.0  # above any 1 - cos (at most 2): the first frame always ranks first, as in vLLM


def evs_keep_count(num_frames: int, tokens_per_frame: int, budget: float, budget_rule: str = "matched") -> int:
    """Tokens one video keeps: round(budget * T * P) (vLLM's int(T * P * (1 - q)), q = 1 - budget, with
    budget_rule="authors"), at least the whole first frame, at most all."""
    total = num_frames * tokens_per_frame
    count = int(total * (1 - (1.0 - budget))) if budget_rule == "authors" else round(budget * total)
    return min(total, max(tokens_per_frame, count))


def evs_dissimilarity(features: torch.Tensor) -> torch.Tensor:
    """features [T, P, D] of one video -> [T, P] float32: 1 - cos with the same patch one frame earlier.

    The first frame scores FIRST_FRAME_SCORE so that it is always kept.
    """
    x = features.float()
    score = torch.full(x.shape[:2], FIRST_FRAME_SCORE, dtype=torch.float32, device=x.device)
    score[1:] = 1.0 - torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1)
    return score


def evs_retention_mask(features: torch.Tensor, budget: float, budget_rule: str = "matched") -> torch.Tensor:
    """features [T, P, D] of one video -> keep [T * P] bool: the top evs_keep_count tokens by dissimilarity.

    Ties go to the earlier token (frame-major order), like vLLM's stable descending sort.
    """
    frames, patches = features.shape[:2]
    score = evs_dissimilarity(features).flatten()
    order = rank_descending(score, torch.arange(score.numel(), device=score.device))
    keep = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    keep[order[:evs_keep_count(frames, patches, budget, budget_rule)]] = True
    return keep


def apply_evs(model: nn.Module, budget: float = 0.3, budget_rule: str = "matched") -> nn.Module:
    """Install EVS in place: keep round(budget * N_v) video tokens per video before layer 0 (budget_rule
    "authors": vLLM's int(N_v * (1 - q)))."""
    check_budget_rule(budget_rule)

    def video_fn(features: torch.Tensor, retention: float) -> torch.Tensor:
        return evs_retention_mask(features, retention, budget_rule)

    return install_pre_llm(model, "evs", "EVS", budget, video_fn)
