"""Reading videos with PyAV: a packet index without decoding, then seek-based or sequential exact decoding."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from framefusion.video.clip import VideoClip, VideoError, VideoInfo
from framefusion.video.ffmpeg_logs import route_ffmpeg_logs
from framefusion.video.sampling import rotate_upright, sample_indices, span_seconds
from framefusion.video.seek_plan import DecodePlan, DecodeRun, plan_decode

Progress = Callable[[int, int], None]  # (packets decoded, packets planned)


def open_container(path: Path) -> av.container.InputContainer:
    """Open a file with PyAV, or VideoError if it is not a video with a decodable video stream."""
    route_ffmpeg_logs()
    try:
        container = av.open(str(path), metadata_errors="replace")  # damaged metadata must not stop decoding
    except av.FFmpegError as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise VideoError(f"not a readable video ({reason}): {path}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoError(f"the video stream of {path} has no codec this FFmpeg build can decode")
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


def _decode(packet: av.Packet) -> list[av.VideoFrame]:
    """The frames one packet completes ([] when the decoder rejects it)."""
    try:
        return packet.decode()
    except av.FFmpegError:
        return []


@dataclass(frozen=True)
class PacketIndex:
    """Every video packet of a stream with a timestamp, in decode order, read without decoding."""

    pts: np.ndarray  # [N] int, presentation timestamps in stream time_base units
    keyframe: np.ndarray  # [N] bool
    seconds_per_tick: float
    nominal_fps: float
    codec: str
    complete: bool  # every packet with data had a timestamp: positions are exact, seeking can be planned

    @property
    def presentation(self) -> np.ndarray:
        """[F] distinct pts in presentation order: the frames the stream shows."""
        return np.unique(self.pts)

    @property
    def times(self) -> np.ndarray:
        """[F] seconds of each shown frame since the first."""
        shown = self.presentation
        return (shown - shown[0]) * self.seconds_per_tick

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last one's end."""
        return span_seconds(self.presentation * self.seconds_per_tick, self.nominal_fps)


def read_index(path: Path) -> PacketIndex:
    """Scan the packets of the first video stream (no decoding); VideoError when none has a timestamp."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        pts, keyframe, complete = [], [], True
        for packet in _packets(container, stream):
            if packet.pts is None:
                complete = complete and packet.size == 0  # the empty packet at the end flushes the decoder
                continue
            pts.append(packet.pts)
            keyframe.append(packet.is_keyframe)
        if not pts:
            raise VideoError(f"no video frames in {path}")
        pts_array = np.asarray(pts, dtype=np.int64)
        complete = complete and np.unique(pts_array).size == pts_array.size
        return PacketIndex(pts_array, np.asarray(keyframe, dtype=bool), float(stream.time_base),
                           float(stream.average_rate or stream.guessed_rate or 0), stream.codec_context.name or "",
                           complete)


class _SeekFailed(Exception):
    """A seek that did not land at or before the planned keyframe (or raised): decode sequentially instead."""


class _FrameCollector:
    """Keeps, for each wanted pts, the frame on screen then: that frame, or the one shown before it if the
    wanted frame never decodes (damaged files). Frames arrive in presentation order."""

    def __init__(self, wanted: list[int]):
        self.pending = wanted  # ascending pts still to fill
        self.shown: av.VideoFrame | None = None
        self.arrays: dict[int, np.ndarray] = {}  # pts -> [H, W, 3] RGB
        self.rotation = 0

    def offer(self, frame: av.VideoFrame) -> None:
        """Take one decoded frame."""
        if frame.pts is None:
            return
        while self.pending and frame.pts > self.pending[0]:
            self._keep(self.pending.pop(0), self.shown if self.shown is not None else frame)
        if self.pending and frame.pts == self.pending[0]:
            self._keep(self.pending.pop(0), frame)
        self.shown = frame

    def finish(self) -> None:
        """End of stream: wanted frames never reached show the last frame."""
        while self.pending and self.shown is not None:
            self._keep(self.pending.pop(0), self.shown)

    def _keep(self, pts: int, frame: av.VideoFrame) -> None:
        self.arrays[pts] = frame.to_ndarray(format="rgb24")
        self.rotation = self.rotation or int(frame.rotation or 0)


def _decode_run(container, stream, run: DecodeRun, index: PacketIndex, position_of: dict[int, int],
                wanted_packets: set[int], progress: Callable[[], None], sparse: bool) -> _FrameCollector:
    """Decode one run and return what it collected for its targets; _SeekFailed when a seek lands wrongly."""
    if run.seek:
        try:
            container.seek(int(index.pts[run.start]), stream=stream, backward=True)  # lands on a keyframe
        except av.FFmpegError:
            raise _SeekFailed from None
    collector = _FrameCollector(sorted(int(index.pts[position]) for position in run.targets))
    context, landed, early = stream.codec_context, not run.seek, False
    for packet in _packets(container, stream):
        if not landed and packet.pts is not None:
            position = position_of.get(int(packet.pts))
            if position is None or position > run.start:
                raise _SeekFailed
            landed, early = True, position < run.start
        if early:  # the seek landed on an earlier keyframe: feed the fresh decoder from the planned one, as if it
            if packet.pts is None or position_of.get(int(packet.pts)) != run.start:  # had landed there
                progress()
                continue
            early = False
        if sparse:  # frames no other frame refers to are skipped unless wanted: they cannot change the others
            context.skip_frame = "DEFAULT" if packet.pts in wanted_packets else "NONREF"
        for frame in _decode(packet):
            collector.offer(frame)
        progress()
        if not collector.pending:
            return collector
    collector.finish()
    return collector


def decode_threads() -> int:
    """Frame threads for a sequential decode: the cores the 1-minute load average leaves free (this decode counted
    as one), at least 1. Frame threading gives the same frames; on a busy machine it only adds switching."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = max(os.getloadavg()[0] - 1.0, 0.0)
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0.0
    return max(1, min(cores, int(cores - busy)))


def decode_frames(path: Path, index: PacketIndex, wanted: np.ndarray, plan: DecodePlan,
                  on_progress: Progress | None = None, threads: int = 1) -> tuple[dict[int, np.ndarray], int]:
    """Decode the frames with the wanted pts [S] by `plan`: ({pts: [H, W, 3] RGB}, rotation in degrees).

    A plan of one run from the start is a sequential decode (with `threads` frame threads); a seeking plan decodes
    each run from its keyframe (single-threaded: frame threads cost a flush per seek). A seek that fails or lands
    past its keyframe makes the rest a sequential decode. Holds only the wanted frames, never the decoded ones.
    """
    position_of = {int(p): i for i, p in enumerate(index.pts.tolist())}
    wanted_packets = set(wanted.tolist())
    done, total = 0, max(plan.packets, 1)

    def progress() -> None:
        nonlocal done
        done += 1
        if on_progress is not None and done % 32 == 0:
            on_progress(min(done, total), total)

    arrays: dict[int, np.ndarray] = {}
    rotation = 0
    sequential = plan.seeks == 0
    remaining = list(plan.runs)
    with open_container(path) as container:
        stream = container.streams.video[0]
        if sequential and threads > 1:
            stream.thread_type, stream.thread_count = "FRAME", threads
        try:
            while remaining:
                collector = _decode_run(container, stream, remaining[0], index, position_of, wanted_packets,
                                        progress, sparse=True)
                arrays.update(collector.arrays)
                rotation = rotation or collector.rotation
                remaining.pop(0)
        except _SeekFailed:
            pass
    if remaining:  # a broken seek: one sequential pass for what is left, in a fresh decoder
        left = sorted(position for run in remaining for position in run.targets)
        fallback = DecodePlan((DecodeRun(0, left[-1], tuple(left), False),))
        more, turned = decode_frames(path, index, index.pts[left], fallback, on_progress, threads)
        arrays.update(more)
        rotation = rotation or turned
    if on_progress is not None and not remaining:  # (after a fallback, the sequential pass reported itself)
        on_progress(done, max(done, total))  # packets actually sent: a few more than planned (B-frame delay)
    return arrays, rotation


def load_with_pyav(path: Path, num_frames: int | None, fps: float | None, max_frames: int,
                   on_progress: Progress | None = None) -> VideoClip:
    """Sample frames with PyAV: index the packets, then decode only what the chosen frames need."""
    index = read_index(path)
    times = index.times
    chosen = sample_indices(times, index.duration, num_frames=num_frames, fps=fps, max_frames=max_frames)
    wanted = index.presentation[chosen]  # [S] pts of the frames to return
    position_of = {int(p): i for i, p in enumerate(index.pts.tolist())}
    targets = np.asarray([position_of[int(p)] for p in wanted.tolist()], dtype=np.int64)
    threads = decode_threads()
    if index.complete:
        plan = plan_decode(index.pts, index.keyframe, targets, threads=threads)
    else:  # packet positions are not exact: one pass from the start
        plan = DecodePlan((DecodeRun(0, int(targets.max()), tuple(targets.tolist()), False),))
    arrays, rotation = decode_frames(path, index, wanted, plan, on_progress, threads)
    if not arrays:
        raise VideoError(f"no frame could be decoded from {path} ({index.pts.size} video packets, all damaged)")
    frames = _gather(arrays, wanted)
    del arrays
    shown = index.presentation.size
    return VideoClip(
        frames=rotate_upright(frames, rotation),
        timestamps=times[chosen],
        fps=shown / index.duration if index.duration > 0 else 0.0,
        duration=index.duration,
        source=str(path),
    )


def _gather(arrays: dict[int, np.ndarray], wanted: np.ndarray) -> np.ndarray:
    """Stack the wanted frames [S, H, W, 3], releasing each decoded one after its last use (peak: about S frames).

    A wanted frame no run reached (damaged files) shows the nearest decoded one.
    """
    decoded = np.asarray(sorted(arrays))
    source = [int(decoded[np.abs(decoded - p).argmin()]) for p in wanted.tolist()]
    last_use = {pts: i for i, pts in enumerate(source)}
    first = arrays[source[0]]
    frames = np.empty((len(source), *first.shape), dtype=first.dtype)
    for i, pts in enumerate(source):
        frames[i] = arrays[pts]
        if last_use[pts] == i:
            del arrays[pts]
    return frames


def probe_with_pyav(path: Path) -> VideoInfo:
    """A video's upright size, frame count, timing, rotation and codec (decodes its first frame)."""
    index = read_index(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        first = next((frame for packet in _packets(container, stream) for frame in _decode(packet)), None)
    if first is None:
        raise VideoError(f"no frame could be decoded from {path}")
    rotation = int(first.rotation or 0)
    width, height = (first.height, first.width) if round(rotation / 90) % 2 else (first.width, first.height)
    count = int(index.presentation.size)
    return VideoInfo(path=str(path), width=width, height=height, num_frames=count,
                     fps=count / index.duration if index.duration > 0 else 0.0, duration=index.duration,
                     rotation=rotation, codec=index.codec)
