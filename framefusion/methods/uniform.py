"""`uniform`, the paper's Original*: the dense model on fewer frames, sampled uniformly (frame rate scaled by the
budget).

Frame count: a clip of T frames makes G = ceil(T / r) grid frames, r = the model's temporal patch size (2 for
the Qwen-VL families, which fuse two sampled frames into one grid frame, else 1). `uniform` keeps
G' = round(budget * G) grid frames, at least ceil(2 / r), at most G, i.e. T' = min(T, G' * r) sampled frames
(an even count for Qwen-VL; at least 2, which Qwen3-VL's processor and InternVL's video layout need), taken at
the centres of T' equal slots of the clip.

kept_ratio: the video tokens of the reduced input over the video tokens the full clip would have had, i.e.
sum over videos of (its tokens) * G / G'. This assumes a grid frame has the same token count however many frames
the clip has, true for every supported family at a fixed frame size (a Qwen-VL processor whose pixel cap covers
the whole clip could give fewer frames more tokens each; the ratio then understates the tokens kept). The model
never sees the full clip, so `select_frames` records on the model where each selection came from (frames kept ->
frames of the clip), for as long as `uniform` is installed on it; the statistics use the most recent selection that
matches the prompt's grid, and a prompt matching none counts as its own full input (kept_ratio 1.0). Build uniform
prompts from `select_frames` on the model `uniform` is installed on.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from framefusion.core.budget import ideal_speedup, kept_ratio, paper_layer_cost
from framefusion.core.layout import TokenLayout, VideoGrid
from framefusion.core.patches import PatchStack
from framefusion.core.stats import ReductionStats
from framefusion.methods.common import check_budget, per_video
from framefusion.methods.install import install_method
from framefusion.methods.oneshot import OneShotReduction
from framefusion.video import VideoClip

MIN_FRAMES = 2  # Qwen3-VL's processor needs two frames per video, and InternVL reads one frame as an image
_RECORD_SIZE = 64


SAMPLING_ATTRIBUTE = "_framefusion_uniform_sampling"  # on a model while `uniform` is installed


@dataclass
class UniformSelections:
    """The frame selections `select_frames` made for one installation of `uniform`, for its statistics."""

    # frames selected -> frames of the clip they were selected from (most recent last)
    sources: OrderedDict = field(default_factory=OrderedDict)

    def remember(self, selected: int, source: int) -> None:
        """Record one selection (bounded: the oldest are forgotten)."""
        self.sources.pop(selected, None)
        self.sources[selected] = source
        while len(self.sources) > _RECORD_SIZE:
            self.sources.popitem(last=False)

    def source_frames(self, grid: VideoGrid) -> int | None:
        """Frames of the full clip that a reduced video with this grid was selected from, if recorded."""
        for selected in reversed(self.sources):
            if math.ceil(selected / grid.raw_frames_per_frame) == grid.frames:
                return self.sources[selected]
        return None


def temporal_patch_size(model: nn.Module) -> int:
    """Sampled frames per grid frame of the model (Qwen-VL: temporal_patch_size, else 1)."""
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    return int(getattr(vision, "temporal_patch_size", None) or 1)


def uniform_frame_count(num_frames: int, budget: float, temporal_patch: int = 1, min_frames: int = MIN_FRAMES) -> int:
    """T': sampled frames kept, a whole number of grid frames G' = round(budget * G), G = ceil(T / r)."""
    if num_frames <= min_frames:
        return num_frames
    grid = math.ceil(num_frames / temporal_patch)
    kept = min(max(round(budget * grid), math.ceil(min_frames / temporal_patch)), grid)
    return min(num_frames, kept * temporal_patch)


def uniform_indices(num_frames: int, count: int) -> np.ndarray:
    """Indices [count] of the frames at the centres of `count` equal slots of num_frames frames."""
    return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)


def select_uniform_frames(clip: VideoClip, budget: float, model: nn.Module) -> VideoClip:
    """The clip on fewer, uniformly spaced frames for `model` (its temporal patch size sets r); the selection is
    remembered on the model while `uniform` is installed on it."""
    check_budget(budget)
    count = uniform_frame_count(clip.num_frames, budget, temporal_patch_size(model))
    index = uniform_indices(clip.num_frames, count)
    sampling = model.__dict__.get(SAMPLING_ATTRIBUTE)
    if sampling is not None:
        sampling.remember(count, clip.num_frames)
    return VideoClip(frames=clip.frames[index], timestamps=np.asarray(clip.timestamps)[index], fps=clip.fps,
                     duration=clip.duration, source=clip.source)


@dataclass
class UniformStats(ReductionStats):
    """ReductionStats of the dense model on a reduced clip, measured against the full clip's video tokens."""

    full_vision_tokens: int = 0  # video tokens the full clip(s) would have had

    @property
    def kept_ratio(self) -> float:
        """Video tokens of the reduced input over those of the full input (every layer keeps all of them)."""
        return kept_ratio(self.vision_tokens_per_layer(), self.full_vision_tokens or self.num_vision_tokens)

    def ideal_speedup(self, hidden_size: int, ffn_size: int) -> float:
        """Dense prefill on the full clip over dense prefill on the reduced one (per-frame text not counted)."""
        full = self.seq_len + self.full_vision_tokens - self.num_vision_tokens
        tokens = [self.seq_len] * self.num_layers
        return ideal_speedup(full, tokens, tokens, paper_layer_cost(hidden_size, ffn_size),
                             linear_layers=self.linear_layers)

    def to_dict(self) -> dict:
        """ReductionStats.to_dict plus the full clip's video-token count."""
        return {**super().to_dict(), "full_vision_tokens": self.full_vision_tokens}


def full_vision_tokens(layout: TokenLayout, sampling: UniformSelections) -> int:
    """Video tokens the prompt would have had on the full clips recorded by `select_frames`."""
    total = 0
    for grid, (start, end) in zip(layout.grids, per_video(layout)):
        source = sampling.source_frames(grid)
        full_grid = math.ceil(source / grid.raw_frames_per_frame) if source is not None else grid.frames
        total += (end - start) * full_grid // grid.frames
    return total


class UniformReduction(OneShotReduction):
    """Removes nothing; reports the reduced input against the full clip."""

    def __init__(self, layout: TokenLayout, stack, device, sampling: UniformSelections):
        super().__init__(layout, stack.num_layers, device, "uniform", None)
        self.sampling = sampling

    def stats(self) -> UniformStats:
        """Statistics with kept_ratio relative to the full clip's video tokens."""
        base = super().stats()
        return UniformStats(**vars(base), full_vision_tokens=full_vision_tokens(self.layout, self.sampling))


def apply_uniform(model: nn.Module, budget: float = 0.3) -> nn.Module:
    """Install the statistics of `uniform` (the model itself stays dense); select_frames picks the frames."""
    check_budget(budget)

    def build(patches: PatchStack):
        sampling = UniformSelections()
        patches.set_attribute(model, SAMPLING_ATTRIBUTE, sampling, "uniform: frame selections")
        return lambda layout, stack, device: UniformReduction(layout, stack, device, sampling)

    return install_method(model, f"uniform(budget={budget}: the dense model on fewer frames)", build)
