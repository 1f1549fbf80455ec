"""FlashVID and the other methods on the demo model's colour-needle questions of the held-out set (split test,
seed 0), the run in notes/flashvid.md (about 3.5 min on one core, the 600 mp4 files written once to --data):

    OMP_NUM_THREADS=1 PYTHONPATH=. python notes/flashvid_colour_run.py [/tmp/flashvid_heldout]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from accuracy import heldout_set  # noqa: E402

from framefusion.demo import DEMO_MAX_NEW_TOKENS, DEMO_NUM_FRAMES  # noqa: E402
from framefusion.pipeline.evaluation import evaluate_dataset  # noqa: E402
from framefusion.pipeline.loading import load_model  # noqa: E402

RUNS = [("dense", 1.0, {}), ("flashvid", 0.3, {}), ("flashvid", 0.3, {"budget_rule": "authors"}),
        ("flashvid", 0.1, {}), ("flashvid", 0.25, {}), ("fastvid", 0.3, {}), ("holitom", 0.3, {}),
        ("visionzip", 0.3, {}), ("vidcom2", 0.3, {}), ("framefusion", 0.3, {})]

if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/flashvid_heldout")
    items = [item for item in heldout_set(folder) if item.task == "color"]
    loaded = load_model("demo", device="cpu", dtype="fp32")
    print("| method | params | budget | correct | accuracy | kept_ratio | time |\n|---|---|---|---|---|---|---|")
    for method, budget, params in RUNS:
        start = time.perf_counter()
        score = evaluate_dataset(loaded.model, loaded.processor, items, method=method, budget=budget,
                                 num_frames=DEMO_NUM_FRAMES, max_new_tokens=DEMO_MAX_NEW_TOKENS, params=params)
        print(f"| {method} | {params or ''} | {budget:g} | {score.correct}/{score.total} | {100 * score.accuracy:.1f} "
              f"| {score.kept_ratio:.3f} | {time.perf_counter() - start:.0f} s |", flush=True)
