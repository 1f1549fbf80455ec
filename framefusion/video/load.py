"""The public entry points: load_video (sample frames) and probe_video (read properties), for either decoder."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from framefusion.video import decord_reader, ffmpeg_logs
from framefusion.video.clip import DECODERS, VideoClip, VideoError, VideoInfo
from framefusion.video.pyav_reader import load_with_pyav, open_container, probe_with_pyav
from framefusion.video.sampling import check_sampling

URL = re.compile(r"^[a-z][a-z0-9+.-]+:/", re.IGNORECASE)  # also a URL that Path() has cut to one slash
# Exceptions PyAV and decord raise on damaged files beyond their own error types; each becomes a VideoError.
DAMAGE = (av.FFmpegError, RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError, OSError,
          UnicodeError, OverflowError, EOFError)


def check_file(path: str | Path) -> Path:
    """The path as a Path, or VideoError if it is a URL, missing, a directory or empty."""
    if URL.match(str(path)):
        raise VideoError(f"framefusion reads local video files only, not URLs: download the video first "
                         f"(e.g. curl -L -o video.mp4 '{path}') and pass the file: {path}")
    path = Path(path)
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        raise VideoError(f"expected a video file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")
    return path


def check_video_file(path: str | Path, decoder: str = "av") -> Path:
    """A quick check before any slow work: the file exists, is a readable container with a video stream (only its
    header is read), and the decoder is installed. Returns the path; VideoError otherwise."""
    if decoder not in DECODERS:
        raise VideoError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}")
    path = check_file(path)
    _as_video_error(path, lambda: open_container(path).close())
    if decoder == "decord":
        decord_reader.require_decord()
    return path


def _as_video_error(path: Path, read: Callable[[], object]):
    """Run a reader; any exception a damaged file provokes becomes one VideoError naming the file."""
    try:
        return read()
    except VideoError:
        raise
    except DAMAGE as error:
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise VideoError(f"cannot decode {path}: the file is damaged or not a supported video "
                         f"({type(error).__name__}: {detail})") from None


def load_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int = 128,
    decoder: str = "av",
    on_progress: Callable[[int, int], None] | None = None,
) -> VideoClip:
    """Decode a video and sample frames uniformly in time: num_frames, one per 1/fps s, or 16.

    The PyAV decoder (default) reads the packet index and decodes only what the sampled frames need, seeking to
    keyframes where that is cheaper than one pass; the frames are exactly those a full decode shows at the chosen
    times. on_progress(done, total) reports decoded packets (PyAV only).
    """
    if decoder not in DECODERS:
        raise VideoError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}")
    check_sampling(num_frames, fps, max_frames)
    path = check_file(path)
    if decoder == "av":
        return _as_video_error(path, lambda: load_with_pyav(path, num_frames, fps, max_frames, on_progress))
    _as_video_error(path, lambda: open_container(path).close())  # unreadable files: PyAV's words, no decord log
    clip = _as_video_error(path, lambda: decord_reader.load_with_decord(path, num_frames, fps, max_frames))
    if clip is not None:
        return clip
    probe_video(path)  # decord's own errors are C++ log lines; PyAV tells precisely what is wrong with the file
    raise VideoError(f"decord cannot decode {path}; try decoder='av'")


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's upright size, frame count, timing, rotation and codec (decodes one frame)."""
    path = check_file(path)
    return _as_video_error(path, lambda: probe_with_pyav(path))


def set_decoder_logging(verbose: bool) -> None:
    """Show FFmpeg's own log lines (PyAV's and decord's) only when verbose; both are silent by default."""
    ffmpeg_logs.VERBOSE = verbose
    ffmpeg_logs.route_ffmpeg_logs()
    decord_reader.QUIET = not verbose


@dataclass(frozen=True)
class Sampling:
    """How to sample frames from a video file: num_frames uniformly in time, or fps (capped at max_frames)."""

    num_frames: int | None = 16
    fps: float | None = None
    max_frames: int = 256
    decoder: str = "av"

    def __post_init__(self) -> None:
        if self.fps is not None and self.num_frames is not None:
            object.__setattr__(self, "num_frames", None)  # fps given: it decides the count
        check_sampling(self.num_frames, self.fps, self.max_frames)

    def load(self, path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> VideoClip:
        """load_video with these settings."""
        return load_video(path, num_frames=self.num_frames, fps=self.fps, max_frames=self.max_frames,
                          decoder=self.decoder, on_progress=on_progress)
