"""Accuracy under token reduction on the demo model: a miniature of the paper's VideoNIAH retrieval test.

    python benchmarks/accuracy.py [--methods dense framefusion ...] [--budgets 0.3 0.5] [--json out.json]

Writes the held-out synthetic video QA set (split "test", real mp4 files) to --data once, then scores the
model for every method at every budget (dense once, at budget 1) and prints a Markdown table: accuracy
overall and per task, and the achieved budget (kept_ratio, the mean share of vision tokens in the KV cache).
Any method registered in framefusion.methods can be named.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from framefusion.demo import (
    DEMO_MAX_NEW_TOKENS,
    DEMO_NAME,
    DEMO_NUM_FRAMES,
    DEMO_SOURCE_FPS,
    DEMO_SOURCE_FRAMES,
    DEMO_SOURCE_SIZE,
)
from framefusion.methods import method_names
from framefusion.pipeline.evaluation import DatasetItem, MethodScore, evaluate_dataset, load_dataset
from framefusion.pipeline.loading import LoadedModel, load_model
from framefusion.synthetic import TASKS, write_dataset

HELDOUT_QUESTIONS = 600
HELDOUT_SEED = 0


def heldout_set(folder: Path, questions: int = HELDOUT_QUESTIONS, seed: int = HELDOUT_SEED) -> list[DatasetItem]:
    """The held-out questions in `folder` (split "test"), written as mp4 + JSONL first if missing."""
    jsonl = folder / "test.jsonl"
    marker = folder / "heldout.json"  # what the folder holds, so a different request rewrites it
    wanted = {"questions": questions, "seed": seed, "frames": DEMO_SOURCE_FRAMES, "size": DEMO_SOURCE_SIZE, "fps": DEMO_SOURCE_FPS}
    if not (jsonl.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted):
        print(f"writing {questions} held-out questions to {folder} ...", file=sys.stderr)
        write_dataset(folder, questions, seed, split="test", num_frames=DEMO_SOURCE_FRAMES, size=DEMO_SOURCE_SIZE,
                      fps=DEMO_SOURCE_FPS)
        marker.write_text(json.dumps(wanted) + "\n")
    return load_dataset(jsonl)


def runs(methods: Sequence[str], budgets: Sequence[float]) -> list[tuple[str, float]]:
    """(method, budget) pairs to score: dense once at budget 1, every other method at every budget."""
    pairs = []
    for method in methods:
        if method == "dense":
            pairs.append(("dense", 1.0))
        else:
            pairs.extend((method, budget) for budget in budgets)
    return pairs


def markdown_table(scores: Sequence[MethodScore]) -> str:
    """One row per (method, budget): accuracy, per-task accuracy, achieved budget, questions."""
    tasks = [t for t in TASKS if any(t in s.per_task for s in scores)]
    tasks += sorted({t for s in scores for t in s.per_task} - set(tasks))
    dense = next((s.accuracy for s in scores if s.method == "dense"), None)
    header = ["method", "budget", "accuracy", "vs dense", *tasks, "kept_ratio", "prefill_ratio", "questions"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in scores:
        delta = "" if dense is None or s.method == "dense" else f"{100 * (s.accuracy - dense):+.1f}"
        cells = [s.method, f"{s.budget:g}", f"{100 * s.accuracy:.1f}", delta,
                 *(f"{100 * s.per_task[t]:.1f}" if t in s.per_task else "" for t in tasks),
                 f"{s.kept_ratio:.3f}", f"{s.prefill_ratio:.3f}", str(s.total)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[MethodScore]:
    """Command line: write the held-out set if needed, score each method and budget, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dense", "framefusion"],
                        help=f"method names (registered: {', '.join(method_names())})")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--data", type=Path, default=Path("runs/heldout"), help="held-out set folder (cache)")
    parser.add_argument("--questions", type=int, default=HELDOUT_QUESTIONS)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED, help="seed of the held-out set (split test)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    parser.add_argument("--model", default=DEMO_NAME)
    parser.add_argument("--num-frames", type=int, default=DEMO_NUM_FRAMES)
    parser.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    parser.add_argument("--tasks", nargs="+", default=None, help=f"score only these tasks ({', '.join(TASKS)})")
    parser.add_argument("--budget-rule", choices=("matched", "authors"), default="matched",
                        help="budget_rule of the methods that take one (VidCom2, FastVID, VisionZip, EVS)")
    args = parser.parse_args(argv)
    for method in args.methods:
        if method not in method_names():
            parser.error(f"unknown method {method!r}; registered: {', '.join(method_names())}")

    command = "python benchmarks/accuracy.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    items = heldout_set(args.data, args.questions, args.seed)
    items = [item for item in items if args.tasks is None or item.task in args.tasks][: args.limit]
    loaded = load_model(args.model, device="cpu", dtype="fp32")
    model, processor = loaded.model, loaded.processor
    scores = []
    for method, budget in runs(args.methods, args.budgets):
        start = time.perf_counter()
        score = evaluate_dataset(LoadedModel.of(model, processor), items, method=method, budget=budget,
                                 num_frames=args.num_frames, max_new_tokens=DEMO_MAX_NEW_TOKENS,
                                 params={"budget_rule": args.budget_rule})
        print(f"{method} @ {budget:g}: {100 * score.accuracy:.1f}% ({score.correct}/{score.total}), "
              f"kept_ratio {score.kept_ratio:.3f}, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        scores.append(score)

    print(f"Command: `{command}`\n")
    print(f"Model: {args.model}; {len(items)} held-out questions (split test, seed {args.seed}), "
          f"{args.num_frames} frames per video. Accuracy in %; kept_ratio = achieved budget.\n")
    print(markdown_table(scores))
    if args.json is not None:
        payload = {"command": command, "model": args.model, "questions": len(items), "seed": args.seed,
                   "num_frames": args.num_frames, "scores": [s.to_dict() for s in scores]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    main()
