"""Check `framefusion ask --json` against the answers recorded from LLaVA-NeXT's code and the authors' FrameFusion
(expected.json, written by `compare.py --record`). Needs only this repository's venv.

    python benchmarks/against_authors/llava_next/check.py [--work DIR]

Builds the harness's tiny checkpoint (framefusion.tiny, fixed seed; its weights must hash to the recorded sha256)
and its lossless clip, runs `framefusion ask CLIP QUESTION --model CKPT --json` for the dense model and each
FrameFusion regime, and compares the greedy token ids, the per-layer token counts and the vision tokens per frame.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED = json.loads((HERE / "expected.json").read_text())


def ask_arguments(clip: Path, ckpt: Path, run: dict) -> list[str]:
    """The `framefusion ask` arguments of one recorded run."""
    args = ["ask", str(clip), EXPECTED["question"], "--model", str(ckpt), "--frames", str(EXPECTED["frames"]),
            "--max-new-tokens", str(EXPECTED["max_new_tokens"]), "--method", run["method"], "--budget",
            str(run["budget"]), "--device", "cpu", "--dtype", "fp32", "--json"]
    if run["method"] == "framefusion":
        args += ["--similarity", str(run["similarity_lower_bound"]), "--ratio-lower-bound",
                 str(run["ratio_lower_bound"])]
    return args


def differences(name: str, run: dict, payload: dict) -> list[str]:
    """What differs between a recorded run and an `ask --json` payload (empty: they agree)."""
    problems = []
    if payload.get("answer_ids") != run["answer_ids"]:
        problems.append(f"{name}: answer_ids {payload.get('answer_ids')} != recorded {run['answer_ids']}")
    if payload["tokens_per_layer"] != run["tokens_per_layer"]:
        problems.append(f"{name}: tokens_per_layer {payload['tokens_per_layer']} != recorded {run['tokens_per_layer']}")
    per_frame = payload["vision_tokens"] / payload["frames"]
    if per_frame != EXPECTED["vision_tokens_per_frame"]:
        problems.append(f"{name}: {per_frame} vision tokens per frame != recorded {EXPECTED['vision_tokens_per_frame']}")
    return problems


def prepare(work: Path) -> tuple[Path, Path]:
    """(checkpoint folder, clip file) under `work`, the checkpoint checked against the recorded weights."""
    sys.path.insert(0, str(HERE))
    import recipe

    ckpt = recipe.write_checkpoint(work / "ckpt")
    digest = recipe.weights_digest(ckpt)
    if digest != EXPECTED["weights_sha256"]:
        raise SystemExit(f"the tiny checkpoint's weights hash to {digest}, not the recorded "
                         f"{EXPECTED['weights_sha256']}: the expectations do not apply (torch's random init changed?)")
    return ckpt, recipe.write_clip(work / "clip.mkv")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", help="where to write the checkpoint and clip (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        ckpt, clip = prepare(Path(args.work or scratch))
        problems = []
        for name, run in EXPECTED["runs"].items():
            proc = subprocess.run([sys.executable, "-m", "ffcli.main", *ask_arguments(clip, ckpt, run)], check=False,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                problems.append(f"{name}: framefusion ask failed: {proc.stderr.strip()[-500:]}")
                continue
            found = differences(name, run, json.loads(proc.stdout))
            problems += found
            print(f"{name}: {'ok' if not found else 'DIFFERENT'}")
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
