"""Run ours.py and an authors' theirs.py on one work folder and print the comparison table (shared by the VidCom2
and FastVID harnesses). Needs only the standard library: the recorded JSON files can be re-tabled anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
OURS_PY = os.environ.get("OURS_PYTHON", "/work/main/.venv/bin/python")
ORACLE_PY = os.environ.get("ORACLE_PYTHON", "/work/oracles/fidelity/venv451/bin/python")


def run(cmd: list[str], cwd: Path) -> None:
    """Run one side with one thread; stop with its stderr on failure."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(("ours:", "theirs:", "convert.py:")):
            print("   ", line)
    if proc.returncode:
        sys.exit(f"{cmd[1]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def max_diff(a: list[float], b: list[float]) -> float:
    """Largest absolute difference of two equal-length lists."""
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def jaccard(a: list[int], b: list[int]) -> float:
    """|a & b| / |a | b|."""
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def table(ours: dict, theirs: dict) -> list[dict]:
    """One row per (budget, rule) of ours, against their run at the same budget."""
    rows = []
    by_budget = {r["budget"]: r for r in theirs["runs"]}
    for run_ in ours["runs"]:
        their = by_budget.get(run_["budget"], {})
        row = {"budget": run_["budget"], "rule": run_["budget_rule"]}
        if "error" in run_ or "error" in their:
            row.update(ours_error=run_.get("error"), theirs_error=their.get("error"),
                       ours_kept=run_.get("kept_count"), theirs_kept=their.get("kept_count"))
            rows.append(row)
            continue
        row.update(ours_kept=run_["kept_count"], theirs_kept=their["kept_count"], of=run_["vision_tokens"],
                   kept_ratio=round(run_["kept_ratio"], 4), same_kept=run_["kept"] == their["kept"],
                   jaccard=round(jaccard(run_["kept"], their["kept"]), 4),
                   same_ids=run_["answer_ids"] == their["answer_ids"],
                   cli_ids=run_["cli"]["answer_ids"] == run_["answer_ids"],
                   logits_max_diff=float(f"{max_diff(run_['first_logits'], their['first_logits']):.2e}"))
        rows.append(row)
    return rows


def print_table(ours: dict, theirs: dict) -> list[dict]:
    """Print the Markdown table and return its rows."""
    rows = table(ours, theirs)
    dense = max_diff(ours["dense"]["first_logits"], theirs["dense"]["first_logits"])
    print(f"\ndense: same greedy ids {ours['dense']['answer_ids'] == theirs['dense']['answer_ids']}, "
          f"first-token logits max |diff| {dense:.2e}\n")
    print("| budget | budget_rule | kept ours | kept theirs | kept_ratio | same kept set | Jaccard | same greedy ids "
          "| ask --json ids = API ids | logits max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "ours_error" in r:
            print(f"| {r['budget']} | {r['rule']} | {r['ours_kept'] or 'error: ' + str(r['ours_error'])} | "
                  f"{r['theirs_kept'] or 'error: ' + str(r['theirs_error'])} | | | | | | |")
            continue
        print(f"| {r['budget']} | {r['rule']} | {r['ours_kept']}/{r['of']} | {r['theirs_kept']} | {r['kept_ratio']} | "
              f"{'yes' if r['same_kept'] else 'no'} | {r['jaccard']} | {'yes' if r['same_ids'] else 'no'} | "
              f"{'yes' if r['cli_ids'] else 'no'} | {r['logits_max_diff']:.1e} |")
    return rows


def compare(harness: Path, family: str, method: str, budgets: list[str], work: Path, name: str = "results") -> None:
    """Both sides, then the table; the JSON of both sides is copied to harness/recorded/."""
    work.mkdir(parents=True, exist_ok=True)
    run([OURS_PY, str(HERE / "ours.py"), str(work), family, method, *budgets], REPO)
    run([ORACLE_PY, str(harness / "theirs.py"), str(work), *budgets], harness)
    ours = json.loads((work / "ours.json").read_text())
    theirs = json.loads((work / "theirs.json").read_text())
    rows = print_table(ours, theirs)
    recorded = harness / "recorded"
    recorded.mkdir(exist_ok=True)
    slim = {"ours": _slim(ours), "theirs": _slim(theirs), "table": rows}
    (recorded / f"{name}.json").write_text(json.dumps(slim, indent=1) + "\n")


def _slim(side: dict) -> dict:
    """The recorded outputs without the full logits (kept sets, ids and the first 8 logits stay)."""
    def cut(run_: dict) -> dict:
        return {k: (v[:8] if k == "first_logits" else v) for k, v in run_.items()}
    return {"dense": cut(side["dense"]), "runs": [cut(r) for r in side["runs"]]}
