"""Our side of the end-to-end checks against the authors' Qwen code (VidCom2 on Qwen2-VL, FastVID on Qwen2.5-VL).

Run with this repository's .venv python (transformers 5.x):
    python ours.py WORK_DIR FAMILY METHOD BUDGET [BUDGET ...]
Writes, if missing, WORK_DIR/ckpt (a tiny random FAMILY checkpoint) and WORK_DIR/clip.mp4 (16 frames of 56x56:
8 temporal patches of 4x4 merged tokens); then per budget and budget rule WORK_DIR/inputs.pt (the processor's
tensors, for the authors' side) and one record in WORK_DIR/ours.json: kept video-token indices, achieved
kept_ratio, greedy answer ids and first-token logits, once through the Python API and once through
`framefusion ask --json` (the ids and counts must agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
QUESTION = "What colour is the square?"
FRAMES = int(os.environ.get("E2E_FRAMES", "16"))  # 16 frames: 8 temporal patches; 32: 16 (multi-frame segments)
SIZE, NEW_TOKENS = 56, 8


def write_inputs(work: Path, family: str) -> tuple[Path, Path]:
    """The tiny checkpoint (6 layers) and the test clip: a static textured background, a square moving on it."""
    from framefusion.tiny import save_tiny_checkpoint
    from framefusion.video import write_video

    ckpt, clip = work / "ckpt", work / "clip.mp4"
    if not (ckpt / "config.json").is_file():
        save_tiny_checkpoint(family, ckpt, num_layers=6, vision_layers=2, seed=0)
    if not clip.is_file():
        rng = np.random.default_rng(0)
        frames = np.repeat(rng.integers(0, 256, size=(1, SIZE, SIZE, 3), dtype=np.uint8), FRAMES, axis=0)
        for f in range(FRAMES):  # a 14-pixel square that moves every 4th frame, and changes colour half way
            x = 2 + 8 * (f // 4) * 16 // FRAMES
            frames[f, 20:34, x:x + 14] = (230, 30, 30) if f < FRAMES // 2 else (30, 30, 230)
        frames[FRAMES // 2:, :8] = rng.integers(0, 256, size=(FRAMES // 2, 8, SIZE, 3), dtype=np.uint8)  # a cut
        write_video(clip, frames, fps=4.0)
    return ckpt, clip


def run_api(loaded, clip: Path, method: str, budget: float, rule: str) -> tuple[dict, dict]:
    """Our method through framefusion.pipeline.ask: (record, processor inputs)."""
    from framefusion.pipeline import ask
    from framefusion.pipeline.answer import model_inputs
    from framefusion.video import Sampling

    sampling = Sampling(num_frames=FRAMES)
    result = ask(loaded, clip, QUESTION, method=method, budget=budget, params={"budget_rule": rule},
                 sampling=sampling, max_new_tokens=NEW_TOKENS)
    inputs = model_inputs(loaded, result.clips, QUESTION)
    inputs["position_ids"], inputs["rope_deltas"] = rope_index(loaded.model, inputs)
    stats = result.stats
    kept = torch.nonzero(stats.removed_at < 0).flatten().tolist()
    record = {"method": method, "budget": budget, "budget_rule": rule, "kept": kept, "kept_count": len(kept),
              "vision_tokens": result.vision_tokens, "kept_ratio": result.kept_ratio,
              "answer_ids": result.answer_ids, "tokens_per_layer": result.tokens_per_layer,
              "first_logits": result.first_token_logits.tolist()}
    return record, {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def rope_index(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The mRoPE positions [3, 1, S] and deltas every method runs on here (framefusion's published rule, as the
    original Qwen code and transformers 4.51: the text after a video at its largest position + 1); the authors' side
    takes them as inputs, so both sides see the same positions."""
    import inspect

    from framefusion import reduced

    with reduced(model, "dense"):
        method = model.model.get_rope_index
        names = set(inspect.signature(method).parameters)
        return method(**{k: v for k, v in inputs.items() if k in names})


def run_cli(ckpt: Path, clip: Path, method: str, budget: float, rule: str) -> dict:
    """The same through `framefusion ask --json` (a subprocess)."""
    cmd = [sys.executable, "-m", "ffcli.main", "ask", str(clip), QUESTION, "--model", str(ckpt), "--method", method,
           "--budget", str(budget), "--budget-rule", rule, "--frames", str(FRAMES), "--max-new-tokens",
           str(NEW_TOKENS), "--device", "cpu", "--json"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    if out.returncode:
        raise SystemExit(f"ours.py: {' '.join(cmd)} failed:\n{out.stderr}")
    payload = json.loads(out.stdout)
    return {"command": "framefusion " + " ".join(cmd[3:]), "answer_ids": payload["answer_ids"],
            "kept_ratio": payload["kept_ratio"], "tokens_per_layer": payload["tokens_per_layer"]}


def main() -> None:
    work, family, method = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    budgets = [float(b) for b in sys.argv[4:]]
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from framefusion.pipeline.loading import load_model

    ckpt, clip = write_inputs(work, family)
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32")
    records, saved = [], None
    for budget in budgets:
        for rule in ("authors", "matched"):
            try:
                record, inputs = run_api(loaded, clip, method, budget, rule)
            except (ValueError, RuntimeError) as error:  # a budget the method refuses: recorded as such
                records.append({"method": method, "budget": budget, "budget_rule": rule, "error": str(error)})
                continue
            record["cli"] = run_cli(ckpt, clip, method, budget, rule)
            records.append(record)
            saved = saved or inputs
            print(f"ours: {method} budget={budget} rule={rule}: kept {record['kept_count']}/"
                  f"{record['vision_tokens']}, ids {record['answer_ids']}, cli ids {record['cli']['answer_ids']}")
    from framefusion.pipeline import ask
    from framefusion.video import Sampling

    dense = ask(loaded, clip, QUESTION, method="dense", sampling=Sampling(num_frames=FRAMES),
                max_new_tokens=NEW_TOKENS)
    torch.save(saved, work / "inputs.pt")
    (work / "ours.json").write_text(json.dumps({"dense": {"answer_ids": dense.answer_ids,
                                                          "first_logits": dense.first_token_logits.tolist()},
                                                "runs": records}))


if __name__ == "__main__":
    main()
