"""The CLI-facing pipeline: load a model, ask, compare, profile, evaluate and visualize.

`framefusion.pipeline.ask` answers one question about videos with one method (it lives in `answer.py`); the
submodules hold the rest (loading, session: VideoSession, compare, profiling, measure, evaluation,
random_weights, visualize).
The names of `answer.py` are imported on first use, so that importing a submodule such as `loading` (the CLI
does, to start) does not pull in transformers' video utilities.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DENSE",
    "AskResult",
    "Generation",
    "Timings",
    "VideoInput",
    "ask",
    "cut_at_stop",
    "dense_token_counts",
    "greedy_generate",
    "load_videos",
    "model_inputs",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("framefusion.pipeline.answer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
