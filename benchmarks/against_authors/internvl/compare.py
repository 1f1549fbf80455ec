"""Compare our InternVL2.5 (remote-code format, natively on transformers 5.x) with InternVL's own code and the
authors' FrameFusion adapter (transformers 4.45.2), on tiny original-format checkpoints.

    OMP_NUM_THREADS=1 python benchmarks/against_authors/internvl/compare.py [--work DIR] [--skip-ours]

Environment: ORACLE_PYTHON (the oracle venv's python), INTERNVL_SRC (InternVL checkout's internvl_chat/),
AUTHORS_SRC (FrameFusion checkout), OURS_PYTHON (default: this interpreter). See README.md.
Prints the table and writes expected.json next to this file: the original code's outputs, for comparing
`framefusion ask --json` with them.
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
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
from counts import rle  # noqa: E402

LOGIT_TOL = 1e-4


def run(python: str, script: str, work: Path, env: dict | None = None) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                       **(env or {}))
    proc = subprocess.run([python, str(HERE / script), str(work)], env=environment, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(("ours:", "theirs:")):
            print("   ", line)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-6000:])
        sys.exit(f"{script} failed with exit code {proc.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=str(Path(os.environ.get("WORK", "/tmp/internvl-oracle"))))
    parser.add_argument("--skip-ours", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_ours:
        run(os.environ.get("OURS_PYTHON", sys.executable), "ours.py", work, {"PYTHONPATH": str(REPO)})
    run(os.environ["ORACLE_PYTHON"], "theirs.py", work)

    ours, theirs = (json.loads((work / f"{side}.json").read_text()) for side in ("ours", "theirs"))
    ol, tl = torch.load(work / "ours.pt"), torch.load(work / "theirs.pt")
    print(f"\ntheirs: transformers {theirs['transformers']}, torch {theirs['torch']}")
    header = ("| checkpoint | run | cost / sim / ratio | tokens per frame (ours / theirs) | per-layer tokens (ours) | "
              "counts equal | max abs logit diff, first token | greedy ids equal |")
    lines = [header, "|" + " --- |" * 8]
    expected = {"video": "needle.mp4", "video_sha256": ours["video_sha256"], "question": ours["question"],
                "frames": ours["frames"], "max_new_tokens": ours["max_new_tokens"], "checkpoints": {}}
    ok = True
    for name, mine in ours["checkpoints"].items():
        other = theirs["checkpoints"][name]
        dense_all = float((ol[f"{name}|dense_all"] - tl[f"{name}|dense_all"]).abs().max())
        print(f"{name}: prompt ids equal {other['input_ids_equal']}, pixels max |diff| "
              f"{other['pixels_max_abs_diff']:.1e}, dense logits at all {len(mine['input_ids'])} positions max |diff| "
              f"{dense_all:.1e}")
        ok &= other["input_ids_equal"] and other["pixels_max_abs_diff"] == 0.0 and dense_all < LOGIT_TOL
        same_ids = [a == b for a, b in zip(mine["tokenizer_ids"], other["tokenizer_ids"])]
        same_text = [a == b for a, b in zip(mine["tokenizer_decoded"], other["tokenizer_decoded"])]
        print(f"{name}: tokenizer ids equal on {sum(same_ids)}/{len(same_ids)} test strings, decoded text equal on "
              f"{sum(same_text)}/{len(same_text)}")
        for text, a, b, good in zip(ours["tokenizer_texts"], mine["tokenizer_ids"], other["tokenizer_ids"], same_ids):
            if not good:
                print(f"   {text!r}: ours {a} theirs {b}")
        for a, b, good in zip(mine["tokenizer_decoded"], other["tokenizer_decoded"], same_text):
            if not good:
                print(f"   decoded: ours {a!r} theirs {b!r}")
        ok &= all(same_ids)
        record = {"builder": mine["builder"], "weights_sha256": mine["weights_sha256"],
                  "tokens_per_frame": other["tokens_per_frame"], "prompt_length": other["prompt_length"],
                  "dense_logits_max_abs_diff_all_positions": dense_all, "runs": {}}
        for run_name, mine_run in mine["runs"].items():
            their_run = other["runs"][run_name]
            params = mine_run.get("regime")
            label = "-" if params is None else \
                "{cost} / {similarity_lower_bound} / {ratio_lower_bound}".format(**params)
            if "error" in their_run:
                lines.append(f"| {name} | {run_name} | {label} | | {rle(mine_run['tokens_per_layer'])} | theirs: "
                             f"{their_run['error']} | | |")
                ok = False
                continue
            counts = mine_run["tokens_per_layer"] == their_run["tokens_per_layer"]
            diff = float((ol[f"{name}|{run_name}"] - tl[f"{name}|{run_name}"]).abs().max())
            greedy = mine_run["answer_ids"] == their_run["answer_ids"]
            ok &= counts and greedy and diff < LOGIT_TOL
            frames = f"{mine_run['vision_tokens'] // mine_run['frames']} / {other['tokens_per_frame']}"
            lines.append(f"| {name} | {run_name} | {label} | {frames} | {rle(mine_run['tokens_per_layer'])} | "
                         f"{counts} | {diff:.1e} | {greedy} |")
            record["runs"][run_name] = {"method": mine_run["method"], "params": params,
                                        "answer_ids": their_run["answer_ids"],
                                        "tokens_per_layer": their_run["tokens_per_layer"]}
        expected["checkpoints"][name] = record
    print("\n" + "\n".join(lines))
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"\nwrote {HERE / 'expected.json'}; all checks {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
