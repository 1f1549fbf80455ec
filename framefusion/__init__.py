"""FrameFusion: merge similar and prune unimportant video tokens inside Hugging Face video LLMs."""

from framefusion.adapters import UnsupportedModelError, adapter_for, supported_families
from framefusion.api import (
    FrameFusionConfig,
    ReducedRun,
    apply_framefusion,
    apply_method,
    install_method,
    install_reducer,
    last_stats,
    method_names,
    reduced,
    remove_framefusion,
    select_frames,
)
from framefusion.core.stats import ReductionStats, StepRecord

__all__ = [
    "FrameFusionConfig",
    "ReducedRun",
    "ReductionStats",
    "StepRecord",
    "UnsupportedModelError",
    "adapter_for",
    "apply_framefusion",
    "apply_method",
    "install_method",
    "install_reducer",
    "last_stats",
    "method_names",
    "reduced",
    "remove_framefusion",
    "select_frames",
    "supported_families",
]
