"""Per-layer token counts in run-length form, for the harness tables (shared by the compare.py drivers)."""

from __future__ import annotations


def rle(counts: list[int], times: str = "x", sep: str = " ") -> str:
    """Run-length form of a per-layer count list: [1729, 778, 545, 545] -> "1729 778 545x2" (with times=" x" and
    sep=", ": "1729, 778, 545 x2")."""
    out, i = [], 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[i]:
            j += 1
        out.append(f"{counts[i]}" + (f"{times}{j - i + 1}" if j > i else ""))
        i = j + 1
    return sep.join(out)
