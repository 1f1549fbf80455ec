"""Three questions about one video: a VideoSession against three separate `ask` calls, on the profile's shape.

    python benchmarks/session_speed.py [--rounds 3] [--frames 32] [--new-tokens 16] [--methods dense framefusion]

The model is `framefusion profile`'s default: Qwen2-VL-7B's architecture with random weights (28 layers) at width
0.25 on the CPU (full size on a GPU that fits it), and the video is the same generated 336x336 H.264 clip,
sampled to --frames frames. For each method and round, one arm asks the three questions through one
VideoSession (decoding and the session's set-up are counted in the first question), the other asks them with
three `framefusion.pipeline.ask` calls, each decoding and encoding the video again; the arms alternate in order
from round to round and the methods too, so that drifts in the speed of a shared machine hit both. Every answer
of the session is checked against the separate ask's, token for token. It prints medians over the rounds (total
and per question, and where the time went), the session / separate ratio of every round, the load average
before and after, and with --json the raw times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = (
    "What is the main object in the video and what does it do? Answer with a short sentence.",
    "Which direction does the shape move in?",
    "How many different colors appear in the video? A. one B. two C. three D. four. Answer with the option's letter.",
)


def arm_separate(loaded, video: Path, method: str, budget: float, sampling, new_tokens: int) -> dict:
    """Three fresh asks: wall seconds per question and their answers."""
    from framefusion.pipeline import ask

    times, answers, parts = [], [], []
    for question in QUESTIONS:
        start = time.perf_counter()
        result = ask(loaded, video, question, method=method, budget=budget, sampling=sampling,
                     max_new_tokens=new_tokens)
        times.append(time.perf_counter() - start)
        answers.append(result.answer_ids)
        parts.append(result.timings.to_dict())
    return {"total_s": sum(times), "question_s": times, "answer_ids": answers, "timings": parts}


def arm_session(loaded, video: Path, method: str, budget: float, sampling, new_tokens: int) -> dict:
    """One VideoSession asked the three questions (its opening, i.e. decoding, counted in the first)."""
    from framefusion import VideoSession

    times, answers, parts, reuse = [], [], [], []
    start = time.perf_counter()
    with VideoSession(loaded, video, method=method, budget=budget, sampling=sampling) as session:
        for question in QUESTIONS:
            answer = session.ask(question, max_new_tokens=new_tokens)
            now = time.perf_counter()
            times.append(now - start)
            start = now
            answers.append(answer.answer_ids)
            parts.append(answer.timings.to_dict())
            reuse.append(answer.reuse.to_json())
        memory = session.memory()
    return {"total_s": sum(times), "question_s": times, "answer_ids": answers, "timings": parts, "reuse": reuse,
            "memory": memory}


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--methods", nargs="+", default=["dense", "framefusion"])
    parser.add_argument("--model", default="qwen2-vl-7b", help="a random-weights reference shape")
    parser.add_argument("--width-scale", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="write the raw times here")
    args = parser.parse_args()

    from ffcli.profile import generated_video
    from framefusion.pipeline.loading import load_model
    from framefusion.video import Sampling

    load_before = os.getloadavg()
    loaded = load_model(args.model, random_weights=True, width_scale=args.width_scale, device=args.device)
    info = loaded.describe()
    print(f"model: {info['name']} random weights, {info['num_layers']} layers, hidden {info['hidden_size']}, width "
          f"scale {info['width_scale']:g}, {info['parameters'] / 1e9:.2f} B parameters, {info['dtype']} on "
          f"{info['device']}; {args.frames} frames, {args.new_tokens} new tokens at most, budget {args.budget}",
          flush=True)
    sampling = Sampling(num_frames=args.frames, max_frames=max(args.frames, 1))
    runs: dict[str, dict[str, list]] = {m: {"session": [], "separate": []} for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="framefusion-session-") as scratch:
        video = generated_video(2 * args.frames, 336, Path(scratch))
        from framefusion.pipeline import ask

        for method in args.methods:  # warm-up: first calls pay one-off costs
            ask(loaded, video, QUESTIONS[0], method=method, budget=args.budget, sampling=sampling, max_new_tokens=1)
        for round_index in range(args.rounds):
            methods = args.methods if round_index % 2 == 0 else list(reversed(args.methods))
            for method in methods:
                arms = ("session", "separate") if round_index % 2 == 0 else ("separate", "session")
                for arm in arms:
                    run = (arm_session if arm == "session" else arm_separate)(loaded, video, method, args.budget,
                                                                             sampling, args.new_tokens)
                    runs[method][arm].append(run)
                    print(f"round {round_index + 1} {method:12s} {arm:8s} total {run['total_s']:7.2f} s  per "
                          f"question {' '.join(f'{t:6.2f}' for t in run['question_s'])}", flush=True)
    load_after = os.getloadavg()
    report(runs, args, load_before, load_after)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "model": info,
                                         "load_before": load_before, "load_after": load_after, "runs": runs},
                                        indent=1))


def report(runs: dict, args, load_before, load_after) -> None:
    """The Markdown tables: medians per method and arm, the ratio per round, and token-for-token agreement."""
    print(f"\nload average (1, 5, 15 min) before {' '.join(f'{v:.1f}' for v in load_before)}, after "
          f"{' '.join(f'{v:.1f}' for v in load_after)}; {os.cpu_count()} CPUs\n")
    print("| method | arm | total (s) | Q1 (s) | Q2 (s) | Q3 (s) | vision (s, Q2+Q3) | prefill (s, Q2+Q3) | "
          "decode (s, Q2+Q3) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, arms in runs.items():
        for arm in ("separate", "session"):
            data = arms[arm]
            per_question = [median([run["question_s"][i] for run in data]) for i in range(len(QUESTIONS))]
            later = {part: median([sum(t[part] for t in run["timings"][1:]) for run in data])
                     for part in ("vision_s", "prefill_s", "decode_s")}
            print(f"| {method} | {arm} | {median([run['total_s'] for run in data]):.2f} | "
                  + " | ".join(f"{t:.2f}" for t in per_question)
                  + f" | {later['vision_s']:.2f} | {later['prefill_s']:.2f} | {later['decode_s']:.2f} |")
    print("\n| method | session / separate, per round | median | same answers (token ids) | KV prefix reused "
          "(layers) | session memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for method, arms in runs.items():
        ratios = [s["total_s"] / p["total_s"] for s, p in zip(arms["session"], arms["separate"])]
        same = all(s["answer_ids"] == p["answer_ids"] for s in arms["session"] for p in arms["separate"])
        reuse = arms["session"][0]["reuse"][-1]
        memory = arms["session"][0]["memory"]
        print(f"| {method} | {', '.join(f'{r:.2f}' for r in ratios)} | {median(ratios):.2f} | "
              f"{'yes' if same else 'NO'} | {reuse['prefix_layers']}/{reuse['num_layers']} | "
              f"{memory['total'] / 2 ** 20:.1f} (features {memory['features'] / 2 ** 20:.1f}, prefix "
              f"{memory['prefix'] / 2 ** 20:.1f}, frames {memory['frames'] / 2 ** 20:.1f}) |")


if __name__ == "__main__":
    main()
