"""What video loading returns and raises: a sampled clip, a file's properties, one error type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NUM_FRAMES = 16  # frames sampled when neither num_frames nor fps is given
DECODERS = ("av", "decord")


class VideoError(ValueError):
    """A video that cannot be read or a bad sampling request, with a one-line message naming the file."""


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


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: size as displayed, frame count, timing, rotation and codec."""

    path: str
    width: int  # upright, after rotation
    height: int  # upright, after rotation
    num_frames: int
    fps: float  # average: num_frames / duration
    duration: float  # seconds, span_seconds of the frame times
    rotation: int  # degrees counter-clockwise that turn the stored frames upright
    codec: str
