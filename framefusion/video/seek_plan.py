"""Planning a sparse decode from a stream's packet index, without touching the file.

Each wanted frame is decodable from the keyframe at or before its packet (in decode order), or from the one
before that when it is a leading picture of an open GOP (presentation time before its keyframe's). Wanted frames
whose start keyframes lie close together share one run of decoding; the plan seeks only where that skips more
packets than a seek costs, and falls back to one pass from the start when that decodes fewer packets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEEK_COST_PACKETS = 8  # a seek and decoder flush cost about as much as decoding this many packets
FRAME_THREAD_GAIN = 0.7  # each frame thread beyond the first decodes about this much more per second


@dataclass(frozen=True)
class DecodeRun:
    """Decode packets from `start` on (seeking there first if `seek`) until every target's frame is out."""

    start: int  # decode-order position of the first packet (a keyframe, or 0)
    end: int  # decode-order position of the last target packet
    targets: tuple[int, ...]  # decode-order positions of the wanted frames' packets
    seek: bool

    @property
    def packets(self) -> int:
        """Packets this run sends to the decoder (at least; B-frame delay adds a few)."""
        return self.end - self.start + 1


@dataclass(frozen=True)
class DecodePlan:
    """Runs in file order; a plan of one run from position 0 without a seek is a sequential decode."""

    runs: tuple[DecodeRun, ...]

    @property
    def packets(self) -> int:
        """Packets sent to the decoder over all runs."""
        return sum(run.packets for run in self.runs)

    @property
    def seeks(self) -> int:
        """How many seeks the plan makes."""
        return sum(run.seek for run in self.runs)

    def cost(self, seek_cost: int = SEEK_COST_PACKETS) -> int:
        """Packets decoded plus the seeks, in packets."""
        return self.packets + seek_cost * self.seeks


def start_positions(pts: np.ndarray, keyframe: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target packet position [S], the position [S] decoding must start at to show its frame exactly.

    pts, keyframe: [N] per packet in decode order. Position 0 counts as a start (the beginning of the file).
    """
    starts = np.union1d(np.flatnonzero(keyframe), [0])  # [K] ascending
    which = np.searchsorted(starts, targets, side="right") - 1  # [S] keyframe at or before each target
    leading = pts[targets] < pts[starts[which]]  # shown before its keyframe: needs the previous GOP too
    which = np.maximum(which - leading, 0)
    return starts[which]


def sequential_speedup(threads: int) -> float:
    """How much faster one sequential pass decodes with `threads` frame threads (seeking runs use one)."""
    return 1.0 + FRAME_THREAD_GAIN * (max(threads, 1) - 1)


def plan_decode(pts: np.ndarray, keyframe: np.ndarray, targets: np.ndarray,
                seek_cost: int = SEEK_COST_PACKETS, threads: int = 1) -> DecodePlan:
    """The cheaper of a seeking plan and one sequential pass, for target packet positions [S] (decode order).

    threads: frame threads a sequential pass gets (a seeking plan decodes single-threaded: frame threads cost a
    flush per seek), which makes one pass the cheaper plan for short files whenever cores are free.
    """
    targets = np.unique(np.asarray(targets, dtype=np.int64))
    if targets.size == 0:
        return DecodePlan(())
    sequential = DecodePlan((DecodeRun(0, int(targets[-1]), tuple(targets.tolist()), False),))
    starts = start_positions(np.asarray(pts), np.asarray(keyframe, dtype=bool), targets)
    order = np.lexsort((targets, starts))  # by start, then position
    runs: list[DecodeRun] = []
    for start, target in zip(starts[order].tolist(), targets[order].tolist()):  # one per sampled frame
        if runs and start <= runs[-1].end + seek_cost:  # cheaper to keep decoding forward than to seek
            last = runs[-1]
            runs[-1] = DecodeRun(last.start, max(last.end, target), last.targets + (target,), last.seek)
        else:
            runs.append(DecodeRun(start, target, (target,), seek=start > 0))
    seeking = DecodePlan(tuple(runs))
    return seeking if seeking.cost(seek_cost) < sequential.cost(seek_cost) / sequential_speedup(threads) else sequential
