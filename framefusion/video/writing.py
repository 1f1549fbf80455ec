"""Writing videos with PyAV: test clips, synthetic data and benchmark files with a chosen GOP structure."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framefusion.video.clip import VideoError
from framefusion.video.ffmpeg_logs import route_ffmpeg_logs


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    timestamps: Sequence[float] | np.ndarray | None = None,
    rotation: int = 0,
    keyframe_interval: int | None = None,
    b_frames: int | None = None,
    open_gop: bool = False,
    quality: int = 18,
) -> Path:
    """Encode RGB frames [T, H, W, 3] uint8 (H, W even) with PyAV; mpeg4 if the codec is missing.

    timestamps: seconds per frame (variable frame rate), else 1 / fps apart. keyframe_interval, b_frames and
    open_gop set the GOP structure (libx264; the encoder's defaults otherwise); quality is libx264's CRF.
    """
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
    route_ffmpeg_logs()  # libx264 encodes in threads too
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(quality), **_x264_gop(keyframe_interval, b_frames, open_gop)}
        else:
            stream.bit_rate = int(4 * width * height * fps)  # ~4 bits per pixel: near lossless
            if keyframe_interval is not None:
                stream.codec_context.gop_size = keyframe_interval
            if b_frames is not None:
                stream.codec_context.max_b_frames = b_frames
        if timestamps is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        patch_matrix = rotation and not hasattr(stream, "set_display_rotation")  # PyAV < 16 cannot set it
        if patch_matrix and path.suffix.lower() not in (".mp4", ".mov"):
            raise VideoError(f"writing rotation metadata into {path.suffix} needs PyAV 16 or newer")
        if rotation and not patch_matrix:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if timestamps is not None:
                frame.pts, frame.time_base = int(pts[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    if rotation and patch_matrix:
        _write_display_matrix(path, rotation)
    return path


def _write_display_matrix(path: Path, rotation: int) -> None:
    """Set the video track's display matrix (the mp4 `tkhd` box) to turn the picture `rotation` degrees counter-
    clockwise, as PyAV 16's set_display_rotation does."""
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    if box < 0:
        raise VideoError(f"no track header to write the rotation into: {path}")
    version = data[box + 4]
    offset = box + 8 + (32 if version == 1 else 20) + 16  # after version/flags, times and ids, reserved/layer/volume
    radians = math.radians(rotation)
    cos, sin = round(math.cos(radians)), round(math.sin(radians))
    matrix = (cos << 16, -sin << 16, 0, sin << 16, cos << 16, 0, 0, 0, 1 << 30)  # 16.16 fixed point, w in 2.30
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def _x264_gop(keyframe_interval: int | None, b_frames: int | None, open_gop: bool) -> dict[str, str]:
    """libx264 options for a fixed GOP structure (no scene-cut keyframes when an interval is given)."""
    params = []
    if keyframe_interval is not None:
        params += [f"keyint={keyframe_interval}", f"min-keyint={keyframe_interval}", "scenecut=0"]
    if b_frames is not None:
        params.append(f"bframes={b_frames}")
    if open_gop:
        params.append("open-gop=1")
    return {"x264-params": ":".join(params)} if params else {}
