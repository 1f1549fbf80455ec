"""Run LLaVA-NeXT's code with the authors' FrameFusion and ours on the same tiny original-format checkpoint, and
print the table (README.md in this folder has the setup).

    OMP_NUM_THREADS=1 python3 benchmarks/against_authors/llava_next/compare.py [--work DIR] [--record]

1. ours.py   (this repository's venv, or $OURS_PYTHON): checkpoint, clip, frames, our answers;
2. theirs.py (the oracle venv $LLAVA_ORACLE/venv, PYTHONPATH = stubs/, $LLAVA_ORACLE/LLaVA-NeXT,
   $LLAVA_ORACLE/FrameFusion): the same frames and prompt through LLaVA-NeXT, then the authors' apply_framefusion;
3. the table: prompt ids and pixels equal, dense prefill logits, and per regime the greedy ids, the per-layer KV
   token counts and the first generated token's logits.
--record writes their answers to expected.json next to this file (check.py compares `framefusion ask` with it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
from counts import rle  # noqa: E402

ORACLE = Path(os.environ.get("LLAVA_ORACLE", "/tmp/llava-oracle"))
OURS_PY = os.environ.get("OURS_PYTHON", str(REPO / ".venv" / "bin" / "python"))
THEIRS_PY = str(ORACLE / "venv" / "bin" / "python")
LLAVA_NEXT_COMMIT = "df179663ae8b83207df100a1f7af24caec633ff9"
FRAMEFUSION_COMMIT = "fbec1d2"
IMAGE_TOLERANCE = 2e-4  # image prompts are 4.5k-7.3k tokens; sdpa against their eager SigLIP gives ~1.05e-4 (README)

try:
    import torch
except ModuleNotFoundError:  # the table reads the logits with torch: run this script again under our venv
    os.execv(OURS_PY, [OURS_PY, *sys.argv])


def run(cmd: list[str], env_extra: dict[str, str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **env_extra)
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=str(HERE), capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("ours:", "theirs:")):
            print("   ", line)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
        sys.exit(f"{Path(cmd[1]).name} failed with exit code {proc.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=str(ORACLE / "work"))
    parser.add_argument("--record", action="store_true", help="write their answers to expected.json")
    parser.add_argument("--table-only", action="store_true", help="reuse the outputs already in --work")
    args = parser.parse_args()
    work = Path(args.work)
    if not args.table_only:
        run([OURS_PY, str(HERE / "ours.py"), str(work)], {"PYTHONPATH": str(REPO)})
        path = os.pathsep.join(str(p) for p in (HERE / "stubs", ORACLE / "LLaVA-NeXT", ORACLE / "FrameFusion"))
        run([THEIRS_PY, str(HERE / "theirs.py"), str(work)], {"PYTHONPATH": path})

    ours, theirs = (json.loads((work / f"{side}.json").read_text()) for side in ("ours", "theirs"))
    ours_logits, theirs_logits = (torch.load(work / f"{side}_logits.pt") for side in ("ours", "theirs"))
    checks = theirs["checks"]
    dense_diff = float((ours_logits["dense_prefill"] - theirs_logits["dense_prefill"]).abs().max())
    print(f"\nprompt ids equal: {checks['prompt_ids_equal']}; pixels max |diff|: {checks['pixels_max_abs_diff']:.1e}; "
          f"dense prefill logits ({ours_logits['dense_prefill'].shape[0]} positions) max |diff|: {dense_diff:.1e}")
    header = "| run | steps (ours) | KV tokens per layer (theirs) | counts equal | greedy ids equal | first-token logits max diff |"
    print("\n" + header + "\n|" + " --- |" * 6)
    ok = checks["prompt_ids_equal"] and checks["pixels_max_abs_diff"] == 0 and dense_diff < 1e-4
    for name, mine in ours["runs"].items():
        their = theirs["runs"][name]
        if name.startswith("image_"):
            diff = float((ours_logits[f"{name}_prefill"] - theirs_logits[f"{name}_prefill"]).abs().max())
            same = mine == their
            ok &= same and diff < IMAGE_TOLERANCE
            print(f"| {name} (dense) | {mine['tiles']} tiles | {mine['image_tokens']} image tokens (theirs "
                  f"{their['image_tokens']}) | {mine['tiles'] == their['tiles']} | "
                  f"{mine['answer_ids'] == their['answer_ids']} | prefill {diff:.1e} |")
            continue
        if "error" in their:
            print(f"| {name} | | theirs: {their['error']} | | | |")
            ok = False
            continue
        steps = " ".join(f"{kind[0]}{point}:{removed}" for point, kind, removed in mine["steps"]) or "-"
        counts_equal = mine["tokens_per_layer"] == their["tokens_per_layer"]
        ids_equal = mine["answer_ids"] == their["answer_ids"]
        diff = float((ours_logits[name] - theirs_logits[name]).abs().max())
        ok &= counts_equal and ids_equal and diff < 1e-4 and mine["vision_tokens"] == their["vision_tokens"]
        print(f"| {name} | {steps} | {rle(their['tokens_per_layer'])} | {counts_equal} | {ids_equal} | {diff:.1e} |")
    print(f"\nvision tokens: ours {ours['runs']['dense']['vision_tokens']}, theirs {theirs['runs']['dense']['vision_tokens']}"
          f" for {theirs['runs']['dense']['frames']} frames; video runs within 1e-4, images within "
          f"{IMAGE_TOLERANCE:.0e}, ids and counts identical: {ok}")
    if args.record:
        sys.path.insert(0, str(HERE))
        import recipe

        expected = {
            "recorded": datetime.date.today().isoformat(),
            "llava_next_commit": LLAVA_NEXT_COMMIT, "framefusion_commit": FRAMEFUSION_COMMIT,
            "checkpoint": recipe.CHECKPOINT, "weights_sha256": ours["weights_sha256"],
            "question": recipe.QUESTION, "frames": recipe.FRAMES, "max_new_tokens": recipe.MAX_NEW_TOKENS,
            "vision_tokens_per_frame": theirs["runs"]["dense"]["vision_tokens"] // theirs["runs"]["dense"]["frames"],
            "runs": {name: {"method": ours["runs"][name]["method"], "budget": ours["runs"][name]["budget"],
                            **ours["runs"][name]["params"], "answer_ids": run["answer_ids"],
                            "tokens_per_layer": run["tokens_per_layer"]}
                     for name, run in theirs["runs"].items() if "error" not in run and not name.startswith("image_")},
        }
        (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(f"recorded {HERE / 'expected.json'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
