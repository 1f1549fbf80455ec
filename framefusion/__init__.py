"""FrameFusion: merge similar and prune unimportant video tokens inside Hugging Face video LLMs."""

from framefusion.adapters import UnsupportedModelError, adapter_for, supported_families
from framefusion.api import apply_framefusion, install_reducer, last_stats, remove_framefusion
from framefusion.core.config import FrameFusionConfig
from framefusion.core.stats import ReductionStats, StepRecord

__all__ = [
    "FrameFusionConfig",
    "ReductionStats",
    "StepRecord",
    "UnsupportedModelError",
    "adapter_for",
    "apply_framefusion",
    "install_reducer",
    "last_stats",
    "remove_framefusion",
    "supported_families",
]
