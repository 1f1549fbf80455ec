"""Compare our FlashVID (transformers 5.x) with the authors' code (Fanziyang-v/FlashVID @1d37422, transformers 4.57.3).

    OMP_NUM_THREADS=1 python benchmarks/against_authors/flashvid/compare.py [--work DIR] [--skip-ours]
        [--recorded] [--record]

Runs ours.py (this repository's venv, or $OURS_PYTHON) and theirs.py (the oracle venv: $FLASHVID_ORACLE/venv, their
checkout at $FLASHVID_SRC; see README.md), then prints the tables. --recorded compares with the authors' outputs
recorded in recorded/theirs.json instead of running their code (no oracle venv needed); --record rewrites that file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ORACLE = Path(os.environ.get("FLASHVID_ORACLE", "/work/oracles/flashvid"))
THEIRS_PY = os.environ.get("THEIRS_PYTHON", str(ORACLE / "venv" / "bin" / "python"))
THEIRS_SRC = os.environ.get("FLASHVID_SRC", str(ORACLE / "src"))
OURS_PY = os.environ.get("OURS_PYTHON", sys.executable)
RECORDED = HERE / "recorded" / "theirs.json"
TESTED = {("memory", "authors_0.10", "seed0"), ("memory", "authors_0.10_v2", "seed0"),
          ("memory", "authors_0.25_one_segment", "ramp")}  # the runs tests/test_flashvid.py compares logits with
sys.path.insert(0, str(HERE))
from settings import SETTINGS


def run(command: list[str], env: dict) -> None:
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env})
    for line in done.stdout.splitlines():
        if line.startswith(("ours:", "theirs:")):
            print("   ", line)
    if done.returncode != 0:
        sys.exit(f"{Path(command[1]).name} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def jaccard(a: list[int], b: list[int]) -> str:
    """|a & b| / |a | b| to three places ("-" when both are empty)."""
    a, b = set(a), set(b)
    return f"{len(a & b) / len(a | b):.3f}" if a | b else "-"


def compact(theirs: dict) -> dict:
    """What recorded/theirs.json keeps: ids, kept positions, the first logits' argmax, and the first logits (six
    places) of the "memory" case, which tests/test_flashvid.py checks."""
    out = {key: theirs[key] for key in ("transformers", "torch", "functions")}
    out["cases"] = {}
    for case, entry in theirs["cases"].items():
        runs = {}
        for name, by_noise in entry["runs"].items():
            runs[name] = {}
            for noise, run_ in (by_noise.items() if name != "dense" else [("seed0", by_noise)]):
                logits = run_["first_logits"]
                runs[name][noise] = {k: v for k, v in run_.items() if k != "first_logits"}
                runs[name][noise]["first_argmax"] = max(range(len(logits)), key=logits.__getitem__)
                if (case, name, noise) in TESTED:
                    runs[name][noise]["first_logits"] = [round(v, 6) for v in logits]
            if name == "dense":
                runs[name] = runs[name]["seed0"]
        out["cases"][case] = {"positions_equal": entry["positions_equal"], "runs": runs}
    return out


def logit_diff(mine: dict, other: dict) -> str:
    """max |ours - theirs| of the first-token logits, or whether their argmax agrees (recorded outputs)."""
    import torch

    if "first_argmax" not in other:  # a live run (recorded ones keep the memory case's logits rounded)
        return f"{(torch.tensor(mine['first_logits']) - torch.tensor(other['first_logits'])).abs().max():.1e}"
    argmax = max(range(len(mine["first_logits"])), key=mine["first_logits"].__getitem__)
    return f"argmax equal: {argmax == other['first_argmax']}"


def outside(kept: list[int], excluded: set[int]) -> list[int]:
    return [i for i in kept if i not in excluded]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=str(ORACLE / "work"))
    parser.add_argument("--skip-ours", action="store_true", help="reuse WORK/ours")
    parser.add_argument("--recorded", action="store_true", help="compare with recorded/theirs.json")
    parser.add_argument("--record", action="store_true", help="write recorded/theirs.json from this run")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_ours:
        run([OURS_PY, str(HERE / "ours.py"), str(work)], {"PYTHONPATH": str(REPO)})
    if args.recorded:
        theirs = json.loads(RECORDED.read_text())
    else:
        run([THEIRS_PY, str(HERE / "theirs.py"), str(work)], {"PYTHONPATH": THEIRS_SRC})
        theirs = json.loads((work / "theirs" / "theirs.json").read_text())
        if args.record:
            RECORDED.parent.mkdir(exist_ok=True)
            RECORDED.write_text(json.dumps(compact(theirs), separators=(",", ":")) + "\n")
    ours = json.loads((work / "ours" / "ours.json").read_text())

    import torch

    print(f"\nours: framefusion {ours['commit']} (transformers 5.x); theirs: transformers {theirs['transformers']}, "
          f"torch {theirs['torch']}" + (" (recorded)" if args.recorded else ""))
    print("\n| case | setting | kept before LLM: ours / theirs | Jaccard: their noise, ramp, ramp outside one-frame "
          "segments | kept at layer 20: ours / theirs, Jaccard (ramp) | greedy ids equal: noise, ramp (CLI) "
          "| max abs first-logit diff (ramp) | their duplicates (noise) |")
    print("|---|---|---|---|---|---|---|")
    for case, entry in ours["cases"].items():
        their_case = theirs["cases"][case]
        for name, mine in entry["runs"].items():
            if name == "dense":
                other = their_case["runs"]["dense"]
                print(f"| {case} | dense (positions 4.57 = ours: {their_case['positions_equal']}) | | | | "
                      f"{mine['answer_ids'] == other['answer_ids']} | {logit_diff(mine, other)} | |")
                continue
            noise, ramp = their_case["runs"][name]["seed0"], their_case["runs"][name]["ramp"]
            alone = set(entry["one_frame_segments"][str(SETTINGS[name]["min_segments"])])
            jaccards = ", ".join(f"{jaccard(mine['kept_before_llm'], other['kept_before_llm'])}"
                                 for other in (noise, ramp))
            jaccards += f", {jaccard(outside(mine['kept_before_llm'], alone), outside(ramp['kept_before_llm'], alone))}"
            inside = "-" if ramp["kept_inside_llm"] is None else (
                f"{len(mine['kept_inside_llm'])} / {len(ramp['kept_inside_llm'])}, "
                f"{jaccard(mine['kept_inside_llm'], ramp['kept_inside_llm'])}")
            ids = f"{mine['answer_ids'] == noise['answer_ids']}, {mine['answer_ids'] == ramp['answer_ids']}"
            if "cli_answer_ids" in mine:
                cli = mine["cli_answer_ids"]
                ids += f" (CLI {cli == noise['answer_ids']}, {cli == ramp['answer_ids']})"
            print(f"| {case} | {name} (kept_ratio {mine['kept_ratio']:.3f}) | {len(mine['kept_before_llm'])} / "
                  f"{len(noise['kept_before_llm'])} | {jaccards} | {inside} | {ids} | {logit_diff(mine, ramp)} "
                  f"| {noise['duplicates_before_llm']} |")

    ours_functions = torch.load(work / "ours" / "functions.pt")
    their_tokens = None if args.recorded else torch.load(work / "theirs" / "functions.pt")
    print("\n| function case (T=16, P=49) | kept: ours / theirs | Jaccard: their noise, ramp, ramp outside one-frame "
          "segments | max abs diff of the tokens both keep there (ramp) |")
    print("|---|---|---|---|")
    for name, mine in ours_functions.items():
        kept = torch.nonzero(mine["keep"]).flatten().tolist()
        noise, ramp = theirs["functions"][name]["seed0"], theirs["functions"][name]["ramp"]
        alone = set(torch.nonzero(mine["one_frame_segment"]).flatten().tolist())
        diff = "-"
        if their_tokens is not None:
            row = {index: r for r, index in enumerate(ramp)}
            common = [i for i in outside(kept, alone) if i in row]
            if common:
                states = their_tokens[(name, "ramp")][[row[i] for i in common]]
                diff = f"{(mine['states'][common].float() - states.float()).abs().max():.1e}"
        print(f"| {name} | {len(kept)} / {len(noise)} | {jaccard(kept, noise)}, {jaccard(kept, ramp)}, "
              f"{jaccard(outside(kept, alone), outside(ramp, alone))} | {diff} |")


if __name__ == "__main__":
    main()
