"""Video input: decode local files with PyAV (default) or decord and sample frames uniformly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VideoClip:
    """Frames sampled from one video, ready for a processor."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB, upright (rotation metadata applied)
    timestamps: np.ndarray  # [T] float seconds of each sampled frame in the source
    fps: float  # average frame rate of the source video
    duration: float  # seconds
    source: str | None = None  # path it came from, if any

    @property
    def num_frames(self) -> int:
        """Number of sampled frames."""
        return int(self.frames.shape[0])
