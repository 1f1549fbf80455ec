"""The slow reference for video sampling: decode every frame of the file in one plain sequential pass.

No seeking, no skipped frames, no threads: each frame the stream shows, in presentation order, with its pts.
load_video must return exactly these frames (same pts, same pixels) at the times sample_indices chooses.
"""

from __future__ import annotations

import av
import numpy as np

from framefusion.video import rotate_upright, sample_indices, span_seconds


def decode_everything(path) -> tuple[np.ndarray, list[np.ndarray], float, float, int]:
    """(pts [F] ascending, frames [F] of [H, W, 3] RGB, seconds per tick, nominal fps, rotation) of every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        shown = []
        for packet in container.demux(stream):
            for frame in packet.decode():
                if frame.pts is not None:
                    shown.append((frame.pts, frame.to_ndarray(format="rgb24"), int(frame.rotation or 0)))
        tick = float(stream.time_base)
        nominal = float(stream.average_rate or stream.guessed_rate or 0)
    shown.sort(key=lambda item: item[0])
    return (np.asarray([item[0] for item in shown]), [item[1] for item in shown], tick, nominal,
            shown[0][2] if shown else 0)


def reference_sample(path, **sampling) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames [S, H, W, 3], timestamps [S], pts [S]) that a full decode shows at the sampled times."""
    pts, frames, tick, nominal, rotation = decode_everything(path)
    times = (pts - pts[0]) * tick
    duration = span_seconds(pts * tick, nominal)
    chosen = sample_indices(times, duration, **sampling)
    picked = np.stack([frames[i] for i in chosen])
    return rotate_upright(picked, rotation), times[chosen], pts[chosen]
