"""FastV against its authors' code (their transformers 4.31 fork) on a tiny LLaMA language model: kept tokens, logits.

    OMP_NUM_THREADS=1 python3 benchmarks/against_authors/fastv/compare.py [--work DIR]

Runs ours.py (this repository's venv, $OURS_PYTHON) and theirs.py (the fork's venv, $FASTV_PYTHON), prints the
table and records it in recorded/results.json. Setup: ../README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS_PY = os.environ.get("OURS_PYTHON", "/work/main/.venv/bin/python")
FASTV_PY = os.environ.get("FASTV_PYTHON", "/work/oracles/fidelity/venv431/bin/python")


def run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=str(HERE), env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{cmd[1]} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/work/oracles/fidelity/work/fastv"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run([OURS_PY, str(HERE / "ours.py"), str(args.work)])
    run([FASTV_PY, str(HERE / "theirs.py"), str(args.work)])
    ours = json.loads((args.work / "ours.json").read_text())
    theirs = json.loads((args.work / "theirs.json").read_text())
    dense = max(abs(a - b) for a, b in zip(ours["dense"], theirs["dense"]))
    print(f"\ndense: last-position logits max |diff| {dense:.1e}\n")
    print("| budget | our K (layers 0..K keep all) | their AGG_LAYER | kept ours | kept theirs | same kept set | "
          "Jaccard | logits max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for t in theirs["runs"]:
        o = next(r for r in ours["runs"] if (r["budget"], r["layer"]) == (t["budget"], t["layer"]))
        a, b = set(o["kept"]), set(t["kept"])
        row = {"budget": t["budget"], "our_layer": t["layer"], "agg_layer": t["agg_layer"], "ours": len(a),
               "theirs": len(b), "same": a == b, "jaccard": len(a & b) / max(len(a | b), 1),
               "logits_max_diff": max(abs(x - y) for x, y in zip(o["logits"], t["logits"]))}
        rows.append(row)
        print(f"| {row['budget']} | {row['our_layer']} | {row['agg_layer']} | {row['ours']} | {row['theirs']} | "
              f"{'yes' if row['same'] else 'no'} | {row['jaccard']:.3f} | {row['logits_max_diff']:.1e} |")
    (HERE / "recorded").mkdir(exist_ok=True)
    (HERE / "recorded" / "results.json").write_text(json.dumps({"dense_logits_max_diff": dense, "rows": rows},
                                                               indent=1) + "\n")


if __name__ == "__main__":
    main()
