"""Every token-reduction method at one budget on the built-in demo model (offline, CPU, about 15 seconds).

    python examples/methods_at_a_budget.py [BUDGET]

It writes a few synthetic needle clips, asks each method the clip's question at the same budget, and prints the
answers with kept_ratio (video tokens in the KV cache) and prefill_ratio (video tokens the prefill ran). With a
real checkpoint, pass its hub id or folder to `load_model` instead of "demo".
"""

import sys
import tempfile
from pathlib import Path

from framefusion.methods import method_names
from framefusion.pipeline import ask
from framefusion.pipeline.evaluation import score_answer
from framefusion.pipeline.loading import load_model
from framefusion.synthetic import make_sample
from framefusion.video import load_video, write_video

budget = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
loaded = load_model("demo")
folder = Path(tempfile.mkdtemp(prefix="framefusion-example-"))
samples = [make_sample(task, seed=seed) for seed, task in enumerate(["color", "position", "direction", "order"])]
clips = []
for i, sample in enumerate(samples):
    path = write_video(folder / f"clip{i}.mp4", sample.frames, fps=8)
    clips.append(load_video(path, num_frames=16))

print(f"budget {budget}: {len(samples)} questions per method")
print(f"{'method':13} {'right':>5} {'kept_ratio':>10} {'prefill_ratio':>13}  answers")
for method in method_names():
    results = [ask(loaded, clip, s.question, method=method, budget=budget, max_new_tokens=8)
               for clip, s in zip(clips, samples)]
    right = sum(score_answer(r.answer, s.answer, s.options) for r, s in zip(results, samples))
    kept = sum(r.kept_ratio for r in results) / len(results)
    prefill = sum(r.prefill_ratio for r in results) / len(results)
    print(f"{method:13} {right:>3}/{len(samples)} {kept:>10.3f} {prefill:>13.3f}  {', '.join(r.answer for r in results)}")
print("expected:", ", ".join(s.answer for s in samples))
