"""Fuzzing video loading: damaged copies of a few generated videos must load or raise VideoError naming the file.

Run as a script (the test suite runs it in a subprocess, so that a hang or crash inside FFmpeg cannot take the
test runner with it):  python video_fuzz.py FOLDER --decoder av --mutants 300 --seed 0
Prints one JSON object: counts per outcome and the first failures.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np

from framefusion.video import VideoError, load_video, set_decoder_logging, write_video

MUTATIONS = ("bit flips", "truncation", "zeroed run", "cut out", "header bytes", "spliced copy")


def sources(folder: Path) -> list[Path]:
    """Small videos of different containers, codecs and GOP structures."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(30, 48, 64, 3), dtype=np.uint8)
    frames[:, :24] = frames[0, :24]  # half static, as in real clips
    times = np.round(np.cumsum(np.r_[0.0, rng.uniform(0.02, 0.2, 29)]), 3)
    return [write_video(folder / "h264.mp4", frames, 10, keyframe_interval=8, b_frames=2),
            write_video(folder / "mpeg4.mp4", frames, 10, codec="mpeg4"),
            write_video(folder / "vfr.mkv", frames, 10, timestamps=times, keyframe_interval=10, b_frames=3)]


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random kind of damage."""
    data, size = bytearray(data), len(data)
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    if kind == "bit flips":
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(size))] ^= 1 << int(rng.integers(8))
    elif kind == "truncation":
        data = data[:int(rng.integers(1, size))]
    elif kind == "zeroed run":
        start, length = int(rng.integers(size)), int(rng.integers(1, 500))
        data[start:start + length] = bytes(len(data[start:start + length]))
    elif kind == "cut out":
        start, end = sorted(int(x) for x in rng.integers(0, size, 2))
        data = data[:start] + data[end:]
    elif kind == "header bytes":
        for _ in range(int(rng.integers(1, 10))):
            data[int(rng.integers(min(size, 200)))] = int(rng.integers(256))
    else:
        start, source, length = int(rng.integers(size)), int(rng.integers(size)), int(rng.integers(1, 2000))
        piece = data[source:source + length]
        data[start:start + len(piece)] = piece
    return bytes(data), kind


def _timeout(*_args):
    raise TimeoutError


def fuzz(folder: Path, decoder: str, mutants: int, seed: int, seconds: int = 5) -> dict:
    """Load `mutants` damaged files; count outcomes; list failures (other exceptions, hangs, unnamed files)."""
    rng = np.random.default_rng(seed)
    originals = sources(folder)
    counts: dict[str, int] = {}
    failures: list[dict] = []
    signal.signal(signal.SIGALRM, _timeout)
    for number in range(mutants):
        source = originals[number % len(originals)]
        data, kind = mutate(source.read_bytes(), rng)
        path = folder / f"mutant{number}{source.suffix}"
        path.write_bytes(data)
        signal.alarm(seconds)  # a per-file limit: a decode that never returns is a hang
        try:
            load_video(path, num_frames=8, decoder=decoder)
            outcome = "loaded"
        except VideoError as error:
            outcome = "VideoError"
            if str(path) not in str(error):
                failures.append({"file": path.name, "damage": kind, "problem": "message without the file",
                                 "message": str(error)})
        except TimeoutError:
            outcome = "hang"
            failures.append({"file": path.name, "damage": kind, "problem": "hang"})
        except Exception as error:  # noqa: BLE001 - what the fuzzer is looking for
            outcome = type(error).__name__
            failures.append({"file": path.name, "damage": kind, "problem": outcome, "message": str(error)[:300]})
        finally:
            signal.alarm(0)
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"decoder": decoder, "counts": counts, "failures": failures[:20]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--decoder", default="av")
    parser.add_argument("--mutants", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="FFmpeg's log lines on, as with the CLI's --verbose")
    args = parser.parse_args()
    set_decoder_logging(args.verbose)
    args.folder.mkdir(parents=True, exist_ok=True)
    json.dump(fuzz(args.folder, args.decoder, args.mutants, args.seed), sys.stdout)


if __name__ == "__main__":
    main()
