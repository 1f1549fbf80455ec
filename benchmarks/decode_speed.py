"""Video decoding speed and memory: seek-based PyAV sampling against a full sequential decode and decord.

    python benchmarks/decode_speed.py [--frames 32] [--folder /tmp/framefusion-decode] [--hour]
    python benchmarks/decode_speed.py --short [--frames 24] [--repeats 21]

Writes its own test videos once (into --folder): a 10-minute 640x360 30 fps H.264 file with B-frames and
250-frame GOPs, a variable-frame-rate file of the same length, and with --hour a 1-hour 1080p file (each made by
encoding one minute and repeating its packets, so the files take seconds to write). For each file it runs, each
in a fresh process: framefusion's PyAV loader (seek-based), the same frames by one sequential decode (the
loader's path before seeking, its slow reference), decord, and decoding only the keyframes the samples need
(a floor: no exact loader can do less). It reports seconds, packets sent to the decoder, peak RSS and the
ratio to decord, checks the seek-based frames against the sequential ones, and prints a Markdown table.

--short measures short clips instead (benchmark clips are mostly under a minute): 30-second 320x240 files, one
variable and one constant frame rate, loaded --repeats times by PyAV and by decord in turn in one process (the
loaders alternate, so drifts in the speed of a shared machine hit both; the garbage of the imports is collected
and frozen first, so that no collection of it lands inside a load), with the medians, the first load of each in
the process, and the PyAV frames checked against a sequential decode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

MINUTE_FRAMES = 1800  # one minute at 30 fps
MODES = ("seek", "sequential", "decord", "keyframes")


# ---------------------------------------------------------------- test files


def minute_frames(height: int, width: int, count: int = MINUTE_FRAMES):
    """A drifting texture with two moving blocks: every frame differs, neighbours are similar."""
    rng = np.random.default_rng(0)
    texture = (rng.integers(0, 4, size=(height // 8, width // 4, 3)) * 60).astype(np.uint8)
    texture = np.repeat(np.repeat(texture, 8, axis=0), 8, axis=1)  # [H, 2W, 3] coarse blocks
    for i in range(count):
        frame = texture[:, (2 * i) % width:(2 * i) % width + width].copy()
        for speed, color in ((5, (255, 40, 0)), (3, (0, 200, 255))):
            top, left = (speed * i) % (height - height // 6), (2 * speed * i) % (width - width // 8)
            frame[top:top + height // 6, left:left + width // 8] = color
        yield frame


def encode_minute(path: Path, height: int, width: int, variable: bool, count: int = MINUTE_FRAMES) -> Path:
    """One minute (`count` frames) of H.264 with B-frames and 250-frame GOPs (variable frame rate: 15-60 ms between
    frames)."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "26", "preset": "veryfast",
                          "x264-params": "keyint=250:min-keyint=250:scenecut=0:bframes=3"}
        if variable:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        pts = 0
        for image in minute_frames(height, width, count):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if variable:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += int(rng.integers(15, 61))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def repeat_packets(source: Path, target: Path, copies: int) -> Path:
    """Concatenate `copies` of a file's video packets with shifted timestamps (every copy starts on a keyframe)."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        incoming = reader.streams.video[0]
        outgoing = writer.add_stream_from_template(incoming)
        packets = [packet for packet in reader.demux(incoming) if packet.size]
        pts = np.sort([packet.pts for packet in packets])
        span = int(pts[-1] - pts[0] + np.median(np.diff(pts)))
        for copy in range(copies):
            for packet in packets:
                shifted = av.Packet(bytes(packet))
                shifted.pts, shifted.dts = packet.pts + copy * span, packet.dts + copy * span
                shifted.is_keyframe, shifted.time_base, shifted.stream = packet.is_keyframe, incoming.time_base, outgoing
                writer.mux(shifted)
    return target


def test_files(folder: Path, hour: bool) -> dict[str, Path]:
    """The benchmark's videos, written once into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = {"10 min 640x360 CFR": ("cfr10.mp4", 360, 640, False, 10),
             "10 min 640x360 VFR": ("vfr10.mp4", 360, 640, True, 10)}
    if hour:
        specs["60 min 1920x1080 CFR"] = ("cfr60_1080p.mp4", 1080, 1920, False, 60)
    files = {}
    for name, (file, height, width, variable, minutes) in specs.items():
        path = folder / file
        if not path.exists():
            print(f"writing {path} ...", file=sys.stderr)
            minute = encode_minute(folder / f"minute_{file}", height, width, variable)
            repeat_packets(minute, path, minutes)
        files[name] = path
    return files


# ---------------------------------------------------------------- one measurement (in a fresh process)


def measure(mode: str, path: Path, frames: int, save: Path | None) -> dict:
    """Load `frames` frames by `mode`; seconds, packets sent to the decoder, peak RSS above the start."""
    from framefusion.video import load_video, pyav_reader
    from framefusion.video.sampling import sample_indices
    from framefusion.video.seek_plan import DecodePlan, DecodeRun, start_positions

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    packets = [0]
    start = time.perf_counter()
    if mode == "seek":
        clip = load_video(path, num_frames=frames, max_frames=1024,
                          on_progress=lambda done, total: packets.__setitem__(0, done))
        result = clip.frames
    else:
        index = pyav_reader.read_index(path)
        chosen = sample_indices(index.times, index.duration, num_frames=frames, max_frames=1024)
        wanted = index.presentation[chosen]
        position_of = {int(p): i for i, p in enumerate(index.pts.tolist())}
        targets = np.asarray([position_of[int(p)] for p in wanted.tolist()])
        if mode == "sequential":
            plan = DecodePlan((DecodeRun(0, int(targets.max()), tuple(targets.tolist()), False),))
            arrays, _ = pyav_reader.decode_frames(path, index, wanted, plan,
                                                  lambda done, total: packets.__setitem__(0, done),
                                                  threads=pyav_reader.decode_threads())
            result = np.stack([arrays[int(p)] for p in wanted.tolist()])
        elif mode == "keyframes":
            keys = np.unique(start_positions(index.pts, index.keyframe, targets))
            result = keyframes_only(path, index.pts[keys])
            packets[0] = int(keys.size)
        else:
            clip = load_video(path, num_frames=frames, max_frames=1024, decoder="decord")
            result, packets[0] = clip.frames, -1
    seconds = time.perf_counter() - start
    if save is not None:
        np.save(save, result)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"mode": mode, "seconds": seconds, "packets": packets[0], "peak_rss": peak, "start_rss": baseline,
            "frames": int(len(result))}


def keyframes_only(path: Path, keyframe_pts: np.ndarray) -> np.ndarray:
    """Decode just the given keyframes (seek to each, take the first frame out)."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for pts in keyframe_pts.tolist():
            container.seek(int(pts), stream=stream, backward=True)
            frame = next(frame for packet in container.demux(stream) for frame in packet.decode())
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out)


def run_child(mode: str, path: Path, frames: int, save: Path | None) -> dict:
    """`measure` in a fresh Python process, so peak RSS and warm caches belong to that one loader."""
    command = [sys.executable, __file__, "--child", mode, str(path), "--frames", str(frames)]
    if save is not None:
        command += ["--save", str(save)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# ---------------------------------------------------------------- short clips, interleaved in one process


SHORT_FILES = {"30 s 320x240 VFR": ("vfr30_320x240.mp4", True, 800),  # 15-60 ms apart: about 30 s
               "34 s 320x240 VFR": ("vfr34_320x240.mp4", True, 900),  # its backward seeks land a keyframe early
               "30 s 320x240 CFR": ("cfr30_320x240.mp4", False, 900)}


def short_files(folder: Path) -> dict[str, Path]:
    """The short clips, written once into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (file, variable, count) in SHORT_FILES.items():
        path = folder / file
        if not path.exists():
            encode_minute(path, 240, 320, variable, count)
        files[name] = path
    return files


def measure_short(path: Path, frames: int, repeats: int) -> dict:
    """PyAV and decord loading the same frames in turn, `repeats` times each: seconds per load, first loads."""
    import gc

    from framefusion.video import load_video, pyav_reader
    from framefusion.video.sampling import sample_indices
    from framefusion.video.seek_plan import DecodePlan, DecodeRun

    gc.collect()
    gc.freeze()  # the imports' garbage: its collection would land inside whichever load triggers it
    times: dict[str, list[float]] = {"av": [], "decord": []}
    clips = {}
    for round_index in range(repeats):
        for decoder in ("av", "decord") if round_index % 2 == 0 else ("decord", "av"):
            start = time.perf_counter()
            clips[decoder] = load_video(path, num_frames=frames, max_frames=1024, decoder=decoder)
            times[decoder].append(time.perf_counter() - start)
    index = pyav_reader.read_index(path)
    wanted = index.presentation[sample_indices(index.times, index.duration, num_frames=frames, max_frames=1024)]
    targets = np.flatnonzero(np.isin(index.pts, wanted))
    one_pass = DecodePlan((DecodeRun(0, int(targets.max()), tuple(targets.tolist()), False),))
    arrays, _ = pyav_reader.decode_frames(path, index, wanted, one_pass)
    exact = bool(np.array_equal(clips["av"].frames, np.stack([arrays[int(p)] for p in wanted.tolist()])))
    threads = pyav_reader.decode_threads() if hasattr(pyav_reader, "decode_threads") else "auto (sequential plans only)"
    return {"times": times, "exact": exact, "threads": threads, "load": os.getloadavg()}


def report_short(folder: Path, frames: int, repeats: int) -> None:
    """The short-clip table (each file in its own process)."""
    rows = ["| file | loader | frames | median (s) | min (s) | first load (s) | vs decord (median) | exact vs "
            "sequential |", "|---|---|---|---|---|---|---|---|"]
    for name, path in short_files(folder).items():
        command = [sys.executable, __file__, "--short-child", str(path), "--frames", str(frames), "--repeats",
                   str(repeats)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        medians = {loader: float(np.median(values)) for loader, values in result["times"].items()}
        for loader, values in result["times"].items():
            exact = ("yes" if result["exact"] else "NO") if loader == "av" else ""
            rows.append(f"| {name} | {'PyAV' if loader == 'av' else loader} | {frames} | {medians[loader]:.3f} | "
                        f"{min(values):.3f} | {values[0]:.3f} | {medians[loader] / medians['decord']:.2f}x | {exact} |")
        print(f"{name}: load average {' '.join(f'{v:.1f}' for v in result['load'])}, PyAV frame threads "
              f"{result['threads']}", file=sys.stderr)
    print("\n".join(rows))


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per file (64 on the 1-hour file)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/framefusion-decode"))
    parser.add_argument("--hour", action="store_true", help="also a 1-hour 1080p file (memory; no sequential run)")
    parser.add_argument("--short", action="store_true", help="short clips (30 s, 320x240), loaders interleaved")
    parser.add_argument("--repeats", type=int, default=21, help="loads per loader with --short")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--short-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.frames, args.save)))
        return
    if args.short_child:
        print(json.dumps(measure_short(args.short_child, args.frames, args.repeats)))
        return
    if args.short:
        report_short(args.folder, 24 if args.frames == 32 else args.frames, args.repeats)
        return
    rows = ["| file | loader | frames | seconds | packets decoded | peak RSS (MiB) | above start (MiB) | vs decord "
            "| exact vs sequential |", "|---|---|---|---|---|---|---|---|---|"]
    for name, path in test_files(args.folder, args.hour).items():
        long = "60 min" in name
        frames = 64 if long else args.frames
        modes = [m for m in MODES if not (long and m == "sequential")]  # a full 1-hour 1080p decode: many minutes
        results = {}
        for mode in modes:
            save = args.folder / f"{mode}.npy" if mode in ("seek", "sequential") else None
            results[mode] = run_child(mode, path, frames, save)
            print(f"{name}: {mode} {results[mode]['seconds']:.2f} s", file=sys.stderr)
        exact = "-"
        if "sequential" in results:
            exact = "yes" if np.array_equal(np.load(args.folder / "seek.npy"),
                                            np.load(args.folder / "sequential.npy")) else "NO"
        decord_s = results["decord"]["seconds"]
        for mode, result in results.items():
            packets = "-" if result["packets"] < 0 else str(result["packets"])
            rows.append(f"| {name} | {mode} | {result['frames']} | {result['seconds']:.2f} | {packets} | "
                        f"{result['peak_rss'] / 2**20:.0f} | {(result['peak_rss'] - result['start_rss']) / 2**20:.0f} "
                        f"| {result['seconds'] / decord_s:.2f}x | {exact if mode == 'seek' else ''} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
