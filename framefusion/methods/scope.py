"""`reduced`: the one way to run a method on a model for a while and get the stock model back afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from framefusion.core.stats import ReductionStats
from framefusion.methods import apply_method, select_frames
from framefusion.methods.install import last_stats, remove_reduction
from framefusion.video import VideoClip


@dataclass
class ReducedRun:
    """A method installed on a model inside `reduced`: its frame selection and its statistics."""

    model: nn.Module
    method: str
    budget: float
    params: dict[str, Any] = field(default_factory=dict)

    def select_frames(self, clip: VideoClip) -> VideoClip:
        """The frames the method feeds the model (all of them, except for frame-selecting methods)."""
        return select_frames(self.method, clip, self.budget, self.model)

    @property
    def stats(self) -> ReductionStats | None:
        """Statistics of the last reducing prefill (None before one, or for a prompt without video)."""
        return last_stats(self.model)


@contextmanager
def reduced(model: nn.Module, method: str = "framefusion", budget: float = 0.3, **params: Any) -> Iterator[ReducedRun]:
    """Install `method` at `budget` on the model for the block, and restore the stock model when it ends (on an
    exception or Ctrl-C too).

        with framefusion.reduced(model, "framefusion", budget=0.3) as run:
            clip = run.select_frames(clip)
            model.generate(**inputs)
            run.stats

    params: method parameters by name; each method takes those it knows (framefusion.apply_method).
    """
    try:
        apply_method(model, method, budget, **params)
        yield ReducedRun(model, method, budget, dict(params))
    finally:
        remove_reduction(model)
