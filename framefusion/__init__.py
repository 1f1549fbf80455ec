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

LAZY = {"VideoSession": "framefusion.pipeline.session"}  # imported on first use: `import framefusion` stays light

__all__ = [
    "FrameFusionConfig",
    "ReducedRun",
    "ReductionStats",
    "StepRecord",
    "UnsupportedModelError",
    "VideoSession",
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


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
