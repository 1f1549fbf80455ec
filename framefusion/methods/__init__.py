"""Token-reduction methods behind one name each, applied at a matched budget.

A method changes the model in place (`apply`) and may also change which frames are sampled
(`select_frames`, e.g. the dense model on fewer frames). `dense` removes every reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from framefusion.api import apply_framefusion, remove_framefusion
from framefusion.video import VideoClip


@dataclass(frozen=True)
class Method:
    """One comparable method: how to install it on a model, and optionally how it picks frames."""

    name: str
    summary: str
    apply: Callable[..., nn.Module]  # apply(model, budget, **params) -> model
    select_frames: Callable[[VideoClip, float], VideoClip] | None = None  # (clip, budget) -> clip


def _dense(model: nn.Module, budget: float, **params: Any) -> nn.Module:
    return remove_framefusion(model)


def _framefusion(model: nn.Module, budget: float, **params: Any) -> nn.Module:
    return apply_framefusion(model, cost=budget, **params)


METHODS: dict[str, Method] = {
    "dense": Method("dense", "the unmodified model", _dense),
    "framefusion": Method("framefusion", "merge similar, then prune unimportant video tokens (FrameFusion)",
                          _framefusion),
}


def method_names() -> list[str]:
    """Names accepted by `apply_method` and the CLI's --method."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method registered under `name`, or a ValueError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def apply_method(model: nn.Module, name: str, budget: float = 0.3, **params: Any) -> nn.Module:
    """Install method `name` on the model at the given budget (replacing any reduction already there)."""
    return get_method(name).apply(model, budget, **params)


def select_frames(name: str, clip: VideoClip, budget: float) -> VideoClip:
    """The frames the method feeds the model (most methods use all sampled frames)."""
    method = get_method(name)
    return method.select_frames(clip, budget) if method.select_frames else clip
