"""The public face: apply a method to a model in place, run it in a scope, remove it, read its statistics."""

from __future__ import annotations

from framefusion.methods import apply_method, method_names, select_frames
from framefusion.methods.framefusion import FrameFusionConfig, apply_framefusion
from framefusion.methods.install import install_method, install_reducer, last_stats, reduction_description
from framefusion.methods.install import remove_reduction as remove_framefusion
from framefusion.methods.scope import ReducedRun, reduced

__all__ = ["FrameFusionConfig", "ReducedRun", "apply_framefusion", "apply_method", "install_method",
           "install_reducer", "last_stats", "method_names", "reduced", "reduction_description",
           "remove_framefusion", "select_frames"]
