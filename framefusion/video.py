"""Video input: decode local files with PyAV (default) or decord and sample frames uniformly."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DEFAULT_NUM_FRAMES = 16  # frames sampled when neither num_frames nor fps is given
DECODERS = ("av", "decord")


class VideoError(ValueError):
    """A video that cannot be read or a bad sampling request, with a one-line message."""


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


# ---------------------------------------------------------------- pure helpers


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


# ---------------------------------------------------------------- files and PyAV


def _check_file(path: str | Path) -> Path:
    """The path as a Path, or VideoError if it is missing, a directory or empty."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        raise VideoError(f"expected a video file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")
    return path


def _open_av(path: Path) -> av.container.InputContainer:
    """Open a file with PyAV, or VideoError if it is not a video with a video stream."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise VideoError(f"not a readable video ({reason}): {path}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path}")
    return container


def _packets(container: av.container.InputContainer, stream) -> Iterator[av.Packet]:
    """Packets of one stream, stopping quietly at the first unreadable byte (truncated files)."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.FFmpegError):
            return
        yield packet


def _decoded_frames(container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order, skipping packets the decoder rejects."""
    for packet in _packets(container, stream):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue
        yield from frames


@dataclass(frozen=True)
class _Index:
    """Presentation timestamps of every frame in a stream, read from packets without decoding."""

    pts: np.ndarray  # [N] int ascending, in stream time_base units
    seconds_per_tick: float
    duration: float  # seconds, span_seconds of the frame times
    codec: str

    @property
    def times(self) -> np.ndarray:
        """[N] float seconds of each frame since the first."""
        return (self.pts - self.pts[0]) * self.seconds_per_tick


def _index_av(path: Path) -> _Index:
    """Scan the packets of the first video stream for their timestamps."""
    with _open_av(path) as container:
        stream = container.streams.video[0]
        pts = [packet.pts for packet in _packets(container, stream) if packet.pts is not None]
        if not pts:
            raise VideoError(f"no video frames in {path}")
        ordered = np.unique(np.asarray(pts, dtype=np.int64))  # [N] presentation order
        tick = float(stream.time_base)
        nominal_fps = float(stream.average_rate or stream.guessed_rate or 0)
        duration = span_seconds(ordered * tick, nominal_fps)
        return _Index(ordered, tick, duration, stream.codec_context.name)


def _first_frame(path: Path) -> av.VideoFrame:
    """The first decodable frame, or VideoError."""
    with _open_av(path) as container:
        for frame in _decoded_frames(container, container.streams.video[0]):
            return frame
    raise VideoError(f"no frame could be decoded from {path}")


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's upright size, frame count, timing, rotation and codec (decodes one frame)."""
    path = _check_file(path)
    index = _index_av(path)
    first = _first_frame(path)
    rotation = int(first.rotation or 0)
    width, height = first.width, first.height
    if round(rotation / 90) % 2:
        width, height = height, width
    count = int(index.pts.size)
    return VideoInfo(
        path=str(path),
        width=width,
        height=height,
        num_frames=count,
        fps=count / index.duration if index.duration > 0 else 0.0,
        duration=index.duration,
        rotation=rotation,
        codec=index.codec,
    )


def _load_av(
    path: Path, num_frames: int | None, fps: float | None, max_frames: int
) -> VideoClip:
    """Sample frames with PyAV: index packet timestamps, then decode once keeping the chosen."""
    index = _index_av(path)
    chosen = sample_indices(
        index.times, index.duration, num_frames=num_frames, fps=fps, max_frames=max_frames
    )
    wanted = index.pts[chosen]  # [S] pts of the frames to keep
    picked: list[av.VideoFrame | None] = [None] * wanted.size
    with _open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        slot, shown = 0, None  # next wanted slot; latest frame at or before it
        for frame in _decoded_frames(container, stream):
            if frame.pts is None:
                continue
            # A frame past a wanted pts means that pts is done: keep what was on screen then
            # (the frame itself, or its predecessor if the wanted frame failed to decode).
            while slot < wanted.size and frame.pts > wanted[slot]:
                picked[slot] = shown if shown is not None else frame
                slot += 1
            if slot == wanted.size:
                break
            shown = frame
        if shown is None and slot < wanted.size:
            raise VideoError(f"no frame could be decoded from {path}")
        picked[slot:] = [shown] * (wanted.size - slot)
    arrays: dict[int, np.ndarray] = {}
    for frame in picked:
        if id(frame) not in arrays:
            arrays[id(frame)] = frame.to_ndarray(format="rgb24")  # [H, W, 3]
    frames = np.stack([arrays[id(frame)] for frame in picked])  # [S, H, W, 3]
    frames = rotate_upright(frames, picked[0].rotation or 0)
    return VideoClip(
        frames=frames,
        timestamps=index.times[chosen],
        fps=index.pts.size / index.duration if index.duration > 0 else 0.0,
        duration=index.duration,
        source=str(path),
    )


# ---------------------------------------------------------------- decord


def _load_decord(
    path: Path, num_frames: int | None, fps: float | None, max_frames: int
) -> VideoClip:
    """Sample frames with decord, which applies rotation metadata itself."""
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        count = len(reader)
        if count > 0:
            spans = reader.get_frame_timestamp(np.arange(count)).astype(np.float64)  # [N, 2] s
            times = spans[:, 0] - spans[0, 0]  # [N]; decord's end times are unreliable for VFR
            duration = span_seconds(times, reader.get_avg_fps())
            chosen = sample_indices(
                times, duration, num_frames=num_frames, fps=fps, max_frames=max_frames
            )
            frames = reader.get_batch(chosen).asnumpy()  # [S, H, W, 3] uint8, upright
            return VideoClip(
                frames=frames,
                timestamps=times[chosen],
                fps=count / duration if duration > 0 else 0.0,
                duration=duration,
                source=str(path),
            )
    except (RuntimeError, decord.DECORDError):
        pass
    # decord's own errors are C++ log lines; PyAV tells precisely what is wrong with the file.
    probe_video(path)
    raise VideoError(f"decord cannot decode {path}; try decoder='av'")


# ---------------------------------------------------------------- public entry points


def load_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int = 128,
    decoder: str = "av",
) -> VideoClip:
    """Decode a video and sample frames uniformly in time: num_frames, one per 1/fps s, or 16."""
    if decoder not in DECODERS:
        raise VideoError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}")
    check_sampling(num_frames, fps, max_frames)
    path = _check_file(path)
    load = _load_av if decoder == "av" else _load_decord
    return load(path, num_frames, fps, max_frames)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    timestamps: Sequence[float] | np.ndarray | None = None,
    rotation: int = 0,
) -> Path:
    """Encode RGB frames [T, H, W, 3] uint8 (H, W even) with PyAV; mpeg4 if the codec is missing."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    count, height, width, _ = frames.shape
    if count == 0:
        raise VideoError("no frames to write")
    if height % 2 or width % 2:
        raise VideoError(f"frame height and width must be even, got {height}x{width}")
    if not fps > 0:
        raise VideoError(f"fps must be positive, got {fps}")
    if timestamps is not None:
        pts = np.round(np.asarray(timestamps, dtype=np.float64) * 1000).astype(np.int64)  # ms
        if pts.shape != (count,) or pts[0] < 0 or np.any(np.diff(pts) <= 0):
            raise VideoError("timestamps must be one per frame, >= 0, rising by at least 1 ms")
    if codec not in av.codecs_available:
        codec = "mpeg4"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        else:
            stream.bit_rate = int(4 * width * height * fps)  # ~4 bits per pixel: near lossless
        if timestamps is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if timestamps is not None:
                frame.pts, frame.time_base = int(pts[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
