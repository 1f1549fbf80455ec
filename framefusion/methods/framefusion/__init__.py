"""FrameFusion (Fu et al., arXiv 2501.01986): merge video tokens similar to the same patch of the previous frame in
the shallow layers, then prune the least attended ones to meet the budget (config.py, reduction.py; the tensor
functions are core/merge.py, core/prune.py, core/budget.py)."""

from __future__ import annotations

from torch import nn

from framefusion.adapters import adapter_for
from framefusion.methods.framefusion.config import FrameFusionConfig
from framefusion.methods.framefusion.reduction import PrefillReduction
from framefusion.methods.framefusion.thresholds import Threshold, resolve_threshold
from framefusion.methods.install import install_reducer

__all__ = ["FrameFusionConfig", "PrefillReduction", "Threshold", "apply_framefusion", "resolve_threshold"]


def apply_framefusion(model: nn.Module, cost: float = 0.3, similarity_lower_bound: float | None = None,
                      ratio_lower_bound: float = 0.1, importance_queries: int | None = None) -> nn.Module:
    """Add FrameFusion to a Hugging Face video LLM in place and return it (re-applying replaces the settings).

    similarity_lower_bound=None takes the model's stored calibration (framefusion calibrate), else its family's
    default (thresholds.py); importance_queries=None takes the family's default (4 for the Qwen-VL families, 1
    for the others). The statistics of every run say which threshold ran and where it came from.
    """
    threshold = resolve_threshold(model, similarity_lower_bound)
    config = FrameFusionConfig(cost, threshold.value, ratio_lower_bound, importance_queries)
    config = config.with_family_default(adapter_for(model).importance_queries)

    def make_reducer(layout, stack, device):
        return PrefillReduction(layout, config, stack, device, threshold.describe())

    description = f"FrameFusion(cost={cost}, similarity_lower_bound={threshold.value} ({threshold.describe()}), " \
                  f"ratio_lower_bound={ratio_lower_bound}, importance_queries={config.importance_queries})"
    return install_reducer(model, make_reducer, description, "framefusion")
