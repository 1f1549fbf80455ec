"""VidCom2 against the authors' Qwen2-VL code, end to end on a tiny Qwen2-VL: kept tokens, greedy ids, logits.

    OMP_NUM_THREADS=1 python3 benchmarks/against_authors/vidcom2/compare.py [--work DIR] [--budgets 0.1 0.25 ...]

Runs ../qwen_e2e/ours.py (this repository's venv, $OURS_PYTHON) and theirs.py (the oracle venv, $ORACLE_PYTHON),
prints the table and records both sides in recorded/results.json. Setup: README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "qwen_e2e"))
from table import compare

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/work/oracles/fidelity/work/vidcom2"))
    parser.add_argument("--budgets", nargs="+", default=["0.1", "0.25", "0.3", "0.5"])
    args = parser.parse_args()
    compare(HERE, "qwen2_vl", "vidcom2", args.budgets, args.work)
