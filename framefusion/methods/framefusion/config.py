"""FrameFusion parameters: one frozen, validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class FrameFusionConfig:
    """The FrameFusion parameters, with the seeds' names and defaults.

    cost: relative token budget C, the average over layers of (vision tokens in the layer's KV cache / N_v).
    similarity_lower_bound: cosine similarity at or above which a token merges into its predecessor.
    ratio_lower_bound: merging ends when a merge step finds fewer than this fraction of tokens similar.
    importance_queries: how many of the prompt's last query rows the prune step averages attention over;
        None takes the model family's default (4 for the Qwen-VL families, 1 for the others, as the authors' code).
    """

    cost: float = 0.3
    similarity_lower_bound: float = 0.6
    ratio_lower_bound: float = 0.1
    importance_queries: int | None = None

    def __post_init__(self) -> None:
        _check("cost", self.cost, lambda v: 0.0 < v <= 1.0, "0 < cost <= 1")
        # A value above 1 is allowed: it disables merging (no cosine similarity reaches it).
        _check(
            "similarity_lower_bound",
            self.similarity_lower_bound,
            lambda v: v >= -1.0,
            "-1 <= similarity_lower_bound (a value above 1 disables merging)",
        )
        _check("ratio_lower_bound", self.ratio_lower_bound, lambda v: 0.0 <= v <= 1.0, "0 <= ratio_lower_bound <= 1")
        queries = self.importance_queries
        if queries is not None and (isinstance(queries, bool) or not isinstance(queries, int) or queries < 1):
            raise ValueError(f"importance_queries={queries!r} is out of range: expected an integer >= 1, or None "
                             "for the model family's default")

    def with_family_default(self, importance_queries: int) -> "FrameFusionConfig":
        """This config with `importance_queries` filled in from the family's default when it is None."""
        if self.importance_queries is not None:
            return self
        return replace(self, importance_queries=importance_queries)


def _check(name: str, value: float, ok, valid: str) -> None:
    """Raise ValueError naming the parameter and its range unless `ok(value)` holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not ok(value):
        raise ValueError(f"{name}={value!r} is out of range: expected {valid}")
