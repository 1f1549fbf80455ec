"""The authors' selection functions against ours on the same inputs: EVS, DyCoke (TTM), VisionZip (HoliTom's port and
VidCom2's Qwen adaptation), HoliTom (outer stage).

    OMP_NUM_THREADS=1 python3 benchmarks/against_authors/selection/compare.py [--work DIR] [--table-only]

Runs ours.py (this repository's venv, $OURS_PYTHON) and theirs.py (the oracle venv, $ORACLE_PYTHON), prints one
table and writes recorded/results.json (the kept sets of both sides). --table-only re-tables WORK_DIR's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OURS_PY = os.environ.get("OURS_PYTHON", "/work/main/.venv/bin/python")
ORACLE_PY = os.environ.get("ORACLE_PYTHON", "/work/oracles/fidelity/venv451/bin/python")


def run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=str(HERE), env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{cmd[1]} failed:\n{proc.stderr[-3000:]}")


def jaccard(a, b):
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def token_match(theirs: torch.Tensor, ours: torch.Tensor) -> tuple[float, float]:
    """(share of their tokens equal to one of ours within 1e-5, max over their tokens of the nearest L-inf diff)."""
    if theirs.numel() == 0 or ours.numel() == 0:
        return float(theirs.numel() == ours.numel()), 0.0
    nearest = (theirs[:, None, :] - ours[None, :, :]).abs().amax(-1).min(dim=1).values  # [n_theirs]
    return float((nearest < 1e-5).float().mean()), float(nearest.max())


def dycoke_blocks(frames: int, patches: int, keep: int) -> list[int]:
    """Rows per frame of dycole_ttm's output, frames in order: odd frames `keep` (compared with the frame before),
    even frames whole, except a frame i + 2 for i in range(0, T - 4, 4) (compared with frame i); with an odd T the
    last frame is absent. Bookkeeping only, to map their output rows back to token indices."""
    sizes = [patches if f % 2 == 0 else keep for f in range(frames - frames % 2)]
    for i in range(0, frames - 4, 4):
        sizes[i + 2] = keep
    return sizes


def dycoke_rows(out: torch.Tensor, features: torch.Tensor) -> list[int]:
    """Token indices of dycole_ttm's output rows, matched inside each frame's block (static patches repeat rows)."""
    frames, patches, _ = features.shape
    kept, start = [], 0
    for f, size in enumerate(dycoke_blocks(frames, patches, int((1 - 0.7) * patches))):
        used = set()
        for row in out[start:start + size]:
            match = [p for p in torch.nonzero((features[f] == row).all(-1)).flatten().tolist() if p not in used]
            used.add(match[0])
            kept.append(f * patches + match[0])
        start += size
    assert start == out.shape[0]
    return sorted(kept)


def rows(work: Path) -> list[dict]:
    inputs = torch.load(work / "inputs.pt")
    ours = json.loads((work / "ours.json").read_text())
    theirs = json.loads((work / "theirs.json").read_text())

    def our(name, method, budget, rule):
        return next(r for r in ours if (r["input"], r["method"], r["budget"], r["rule"]) == (name, method, budget, rule))

    out = []
    for t in theirs:
        name, method, budget = t["input"], t["method"], t["budget"]
        features = inputs[name][0]
        flat = features.reshape(-1, features.shape[-1])
        row = {"input": name, "method": method, "budget": budget}
        if method == "evs":
            for rule in ("matched", "authors"):
                o = our(name, "evs", budget, rule)
                out.append({**row, "rule": rule, "ours": len(o["kept"]), "theirs": len(t["kept"]),
                            "same": o["kept"] == t["kept"], "jaccard": jaccard(o["kept"], t["kept"])})
        elif method == "dycoke":
            o = our(name, "dycoke", None, "authors' K=0.7")
            t["kept"] = dycoke_rows(torch.tensor(t["rows"]), features)
            out.append({**row, "rule": "K=0.7", "ours": len(o["kept"]), "theirs": t["count"],
                        "same": o["kept"] == t["kept"], "jaccard": jaccard(o["kept"], t["kept"])})
        elif method in ("visionzip/given", "visionzip/norm"):
            o = our(name, method, budget, "authors")
            our_tokens = torch.tensor(o["features"])[o["kept"]]
            their_tokens = torch.cat([flat[t["dominant"]], torch.tensor(t["contextual"]).reshape(-1, flat.shape[1])])
            share, diff = token_match(their_tokens, our_tokens)
            out.append({**row, "rule": "authors", "ours": len(o["kept"]), "theirs": their_tokens.shape[0],
                        "same": share == 1.0 and len(o["kept"]) == their_tokens.shape[0], "token_share": share,
                        "max_diff": diff})
        elif method == "visionzip/vidcom2-branch":
            o = our(name, "visionzip/norm", budget, "authors")
            out.append({**row, "rule": "authors", "ours": len(o["kept"]), "theirs": len(t["kept"]),
                        "same": o["kept"] == t["kept"], "jaccard": jaccard(o["kept"], t["kept"])})
        elif method == "holitom":
            for rule in ("matched", "authors"):
                o = our(name, "holitom", budget, rule)
                share, diff = token_match(torch.tensor(t["tokens"]), torch.tensor(o["features"])[o["kept"]])
                out.append({**row, "rule": rule, "ours": len(o["kept"]), "theirs": t["count"],
                            "same": share == 1.0 and len(o["kept"]) == t["count"], "token_share": share,
                            "max_diff": diff})
    return out


def record(work: Path) -> None:
    """recorded/inputs.pt (the inputs) and recorded/theirs.pt (the authors' outputs, compact), for the tests."""
    inputs = torch.load(work / "inputs.pt")
    torch.save(inputs, HERE / "recorded" / "inputs.pt")
    compact = {}
    for t in json.loads((work / "theirs.json").read_text()):
        key = f"{t['input']}|{t['method']}|{t['budget']}"
        if t["method"] == "dycoke":
            compact[key] = torch.tensor(dycoke_rows(torch.tensor(t["rows"]), inputs[t["input"]][0]))
        elif "kept" in t:
            compact[key] = torch.tensor(t["kept"])
        elif t["method"] == "holitom":
            compact[key] = torch.tensor(t["tokens"], dtype=torch.float32)
        else:
            compact[key] = {"dominant": torch.tensor(t["dominant"]),
                            "contextual": torch.tensor(t["contextual"], dtype=torch.float32)}
    torch.save(compact, HERE / "recorded" / "theirs.pt")


def print_table(table: list[dict]) -> None:
    print("| input | method | budget | budget_rule | kept ours | kept theirs | identical | Jaccard | share of their "
          "tokens in ours | max abs diff (nearest) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        jac = f"{r['jaccard']:.3f}" if "jaccard" in r else ""
        share = f"{r['token_share']:.3f}" if "token_share" in r else ""
        diff = f"{r['max_diff']:.1e}" if "max_diff" in r else ""
        print(f"| {r['input']} | {r['method']} | {r['budget'] if r['budget'] is not None else ''} | {r['rule']} | "
              f"{r['ours']} | {r['theirs']} | {'yes' if r['same'] else 'no'} | {jac} | {share} | {diff} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/work/oracles/fidelity/work/selection"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        args.work.mkdir(parents=True, exist_ok=True)
        run([OURS_PY, str(HERE / "ours.py"), str(args.work)])
        run([ORACLE_PY, str(HERE / "theirs.py"), str(args.work)])
    table = rows(args.work)
    print_table(table)
    (HERE / "recorded").mkdir(exist_ok=True)
    (HERE / "recorded" / "results.json").write_text(json.dumps(table, indent=1) + "\n")
    record(args.work)
