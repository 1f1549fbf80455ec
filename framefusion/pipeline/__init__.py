"""The CLI-facing pipeline: load a model, ask, compare, profile, evaluate and visualize.

`framefusion.pipeline.ask` answers one question about videos with one method; the submodules hold the rest
(loading, compare, profiling, measure, evaluation, random_weights, visualize).
"""

from framefusion.pipeline.answer import (
    DENSE,
    AskResult,
    Generation,
    Timings,
    VideoInput,
    ask,
    cut_at_stop,
    dense_token_counts,
    greedy_generate,
    load_videos,
    model_inputs,
)

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
