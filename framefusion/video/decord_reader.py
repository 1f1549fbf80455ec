"""Reading videos with decord (optional: it ships wheels only for some platforms)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from framefusion.video.clip import VideoClip, VideoError
from framefusion.video.sampling import sample_indices, span_seconds


def decord_available() -> bool:
    """Whether decord can be imported here (its wheels exist for Linux x86_64 and Windows only)."""
    return importlib.util.find_spec("decord") is not None


QUIET = True  # silence decord's bundled FFmpeg, which writes straight to stderr (framefusion.video.set_decoder_logging)


def require_decord():
    """The decord module with FFmpeg's log level applied, or VideoError naming the default decoder."""
    if not decord_available():
        raise VideoError("decoder 'decord' is not installed on this platform (decord publishes wheels for Linux "
                         "x86_64 and Windows only); use the default decoder 'av' (PyAV)")
    import decord

    decord.logging.set_level(decord.logging.QUIET if QUIET else decord.logging.WARNING)
    return decord


def load_with_decord(path: Path, num_frames: int | None, fps: float | None, max_frames: int) -> VideoClip | None:
    """Sample frames with decord (which applies rotation metadata itself); None when decord cannot decode it."""
    decord = require_decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        count = len(reader)
        if count == 0:
            return None
        spans = reader.get_frame_timestamp(np.arange(count)).astype(np.float64)  # [N, 2] s
        times = spans[:, 0] - spans[0, 0]  # [N]; decord's end times are unreliable for VFR
        duration = span_seconds(times, reader.get_avg_fps())
        chosen = sample_indices(times, duration, num_frames=num_frames, fps=fps, max_frames=max_frames)
        frames = reader.get_batch(chosen).asnumpy()  # [S, H, W, 3] uint8, upright
    except (RuntimeError, decord.DECORDError):
        return None
    return VideoClip(frames=frames, timestamps=times[chosen], fps=count / duration if duration > 0 else 0.0,
                     duration=duration, source=str(path))

