"""Which frames to take: uniform sampling by presentation time, the clip's span, rotation to upright."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from framefusion.video.clip import DEFAULT_NUM_FRAMES, VideoError


def check_sampling(num_frames: int | None, fps: float | None, max_frames: int) -> None:
    """Raise VideoError unless the sampling request is valid (num_frames or fps, both positive)."""
    if num_frames is not None and fps is not None:
        raise VideoError("give num_frames or fps, not both")
    if num_frames is not None and num_frames <= 0:
        raise VideoError(f"num_frames must be positive, got {num_frames}")
    if fps is not None and not fps > 0:
        raise VideoError(f"fps must be positive, got {fps}")
    if max_frames <= 0:
        raise VideoError(f"max_frames must be positive, got {max_frames}")


def sample_indices(
    frame_times: Sequence[float] | np.ndarray,
    duration: float,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int = 128,
) -> np.ndarray:
    """Indices [S] of the frames on screen at uniformly spaced times, unique, at most max_frames."""
    check_sampling(num_frames, fps, max_frames)
    times = np.asarray(frame_times, dtype=np.float64)  # [N] start of each frame, ascending, from 0
    if times.size == 0:
        raise VideoError("the video has no frames")
    # Sample at the centres of equal time slots, far from frame boundaries.
    if fps is not None:
        count = max(1, math.floor(duration * fps + 1e-3))  # tolerate float32 timestamps
        targets = (np.arange(count) + 0.5) / fps
    else:
        count = num_frames or DEFAULT_NUM_FRAMES
        targets = (np.arange(count) + 0.5) * (duration / count)
    indices = np.searchsorted(times, targets, side="right") - 1  # last frame starting at or before
    indices = np.unique(np.clip(indices, 0, times.size - 1))
    if indices.size > max_frames:
        keep = ((np.arange(max_frames) + 0.5) * (indices.size / max_frames)).astype(np.int64)
        indices = indices[keep]
    return indices.astype(np.int64)


def span_seconds(frame_times: Sequence[float] | np.ndarray, nominal_fps: float = 0.0) -> float:
    """Seconds from the first frame's start to the last one's end; the last lasts the median gap."""
    times = np.asarray(frame_times, dtype=np.float64)  # [N] ascending
    if times.size > 1:
        return float(times[-1] - times[0] + np.median(np.diff(times)))
    return 1.0 / nominal_fps if nominal_fps > 0 else 0.0


def rotate_upright(frames: np.ndarray, rotation: float) -> np.ndarray:
    """Turn frames [..., H, W, C] counter-clockwise by `rotation` degrees (rounded to 90s)."""
    quarter_turns = round(rotation / 90) % 4
    if quarter_turns == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, quarter_turns, axes=(-3, -2)))
