"""Helpers shared by the comparison methods: budget validation, per-video spans, statistics from a layout."""

from __future__ import annotations

import torch

from framefusion.core.layout import TokenLayout
from framefusion.core.stats import ReductionStats, StepRecord

BUDGET_RULES = ("matched", "authors")  # budget_rule: the exactly matched budget, or the authors' own arithmetic


def check_budget_rule(budget_rule: str) -> None:
    """Raise ValueError unless budget_rule is "matched" or "authors"."""
    if budget_rule not in BUDGET_RULES:
        raise ValueError(f"budget_rule={budget_rule!r}: choose one of {', '.join(BUDGET_RULES)}")


def check_budget(budget: float) -> None:
    """Raise ValueError unless 0 < budget <= 1."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0.0 < budget <= 1.0:
        raise ValueError(f"budget={budget!r} is out of range: expected 0 < budget <= 1")


def layout_stats(layout: TokenLayout, num_layers: int, method: str, removed_at: torch.Tensor,
                 removed_by: torch.Tensor, steps: list[StepRecord], cls: type[ReductionStats] = ReductionStats,
                 **extra) -> ReductionStats:
    """A `cls` (ReductionStats or a subclass taking `extra` fields) for a prompt's layout; nothing merged."""
    rows, cols = layout.rows_cols()
    return cls(
        method=method,
        num_layers=num_layers,
        seq_len=layout.seq_len,
        vision_positions=layout.positions.clone(),
        token_grid=torch.stack([layout.video, layout.frame, rows, cols], dim=1),
        grids=layout.grids,
        removed_at=removed_at.cpu(),
        removed_by=removed_by.cpu(),
        merged_into=torch.full((layout.num_vision_tokens,), -1, dtype=torch.long),
        steps=list(steps),
        **extra,
    )


def per_video(layout: TokenLayout) -> list[tuple[int, int]]:
    """(start, end) of each video's tokens in the layout's [N_v] arrays (each video's tokens are contiguous)."""
    counts = torch.bincount(layout.video, minlength=layout.num_videos).tolist()
    bounds, start = [], 0
    for count in counts:
        bounds.append((start, start + count))
        start += count
    return bounds
