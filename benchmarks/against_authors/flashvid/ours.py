"""Our side: the tiny 28-layer Qwen2.5-VL checkpoint, the inputs of each case, and our FlashVID on them.

Run with this repository's .venv python (transformers 5.x, our `framefusion`):
    python ours.py WORK_DIR
Writes WORK_DIR/ckpt (if missing), WORK_DIR/ours/inputs_<case>.pt (the model inputs and our mRoPE positions, for
theirs.py), WORK_DIR/ours/functions.pt (random features for the pure-function comparison and our outputs) and
WORK_DIR/ours/ours.json (kept positions, greedy ids, first-token logits per case and setting).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))
from conftest import make_random_clip
from settings import (
    CHECKPOINT,
    CLIP,
    FUNCTION_CASES,
    NEW_TOKENS,
    QUESTION,
    QWEN_SCRIPT,
    SETTINGS,
    function_inputs,
    our_params,
)

from framefusion import reduced
from framefusion.methods.fastvid import frame_transitions, segment_lengths
from framefusion.methods.flashvid import authors_frame_counts
from framefusion.methods.flashvid_video import flashvid_video
from framefusion.pipeline import ask
from framefusion.pipeline.answer import model_inputs
from framefusion.pipeline.loading import load_model
from framefusion.tiny import save_tiny_checkpoint
from framefusion.video import Sampling
from framefusion.video.writing import write_video

SAVED_KEYS = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def kept_positions(stats, point: int) -> list[int]:
    """Sequence positions of the video tokens alive after reduction point `point`."""
    return sorted(stats.vision_positions[stats.alive_after(point)].tolist())


def one_frame_positions(model, inputs) -> dict:
    """Per DySeg minimum: the sequence positions of the video tokens in one-frame segments (where the authors
    cluster selected tokens too)."""
    with torch.no_grad():
        features = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    features = torch.cat(list(getattr(features, "pooler_output", features)))
    grid = inputs["video_grid_thw"][0].tolist()
    frames, patches = grid[0], grid[1] * grid[2] // 4
    positions = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
    out = {}
    for minimum in sorted({setting["min_segments"] for setting in SETTINGS.values()}):
        lengths = segment_lengths(frame_transitions(features.view(frames, patches, -1)), minimum, 0.9)
        alone = torch.cat([torch.full((n,), n == 1) for n in lengths]).repeat_interleave(patches)
        out[str(minimum)] = positions[alone].tolist()
    return out


def cli_answer_ids(ckpt: Path, video: Path, setting: dict) -> list[int]:
    """`framefusion ask --json` with --method flashvid and the setting's budget rule: its answer_ids."""
    command = [sys.executable, "-m", "ffcli.main", "ask", str(video), QUESTION, "--model", str(ckpt), "--device",
               "cpu", "--method", "flashvid", "--budget", str(setting["budget"]), "--budget-rule",
               setting["budget_rule"], "--frames", str(CLIP["frames"]), "--max-new-tokens", str(NEW_TOKENS), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(f"ours: framefusion ask failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)["answer_ids"]


def run_functions(out: Path) -> None:
    """Our flashvid_video on the random feature sets (the authors' arithmetic), for the pure-function comparison."""
    results = {}
    for name, case in FUNCTION_CASES.items():
        features, saliency = function_inputs(case)
        frames, patches, _ = features.shape
        selected, context = authors_frame_counts(frames, patches, case["retention"], 1.25, case["alpha"])
        selection = flashvid_video(features, saliency, selected, context, selection=case["selection"],
                                   temporal_threshold=case["temporal_threshold"], segment_threshold=0.9,
                                   min_segments=case["min_segments"], exact=False, tree_weights="authors")
        lengths = segment_lengths(frame_transitions(features), case["min_segments"], 0.9)
        alone = torch.cat([torch.full((n,), n == 1) for n in lengths]).repeat_interleave(patches)  # [T * P]
        results[name] = {"features": features, "saliency": saliency, "keep": selection.keep,
                         "states": selection.features, "one_frame_segment": alone}
    torch.save(results, out / "functions.pt")


def main(work: Path) -> None:
    out = work / "ours"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = work / "ckpt"
    if not (ckpt / "model.safetensors").exists():
        save_tiny_checkpoint("qwen2_5_vl", ckpt, **CHECKPOINT)
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32", attn="sdpa")
    model = loaded.model
    clip = make_random_clip(CLIP["frames"], size=CLIP["size"], static_fraction=CLIP["static_fraction"],
                            interval=CLIP["interval"])
    video = out / "clip.mp4"
    write_video(video, clip.frames, fps=1 / CLIP["interval"])
    long_clip = make_random_clip(2 * CLIP["frames"], size=CLIP["size"], static_fraction=CLIP["static_fraction"],
                                 interval=CLIP["interval"])  # 16 temporal patches: segments of several frames
    clips = {"memory": clip, "mp4": Sampling(num_frames=CLIP["frames"]).load(video), "memory32": long_clip}
    results = {"cases": {}}
    for case, case_clip in clips.items():
        inputs = model_inputs(loaded, [case_clip], QUESTION)
        with torch.no_grad(), reduced(model, "dense"):  # the published positions, as every method here runs
            position_ids, rope_deltas = model.model.get_rope_index(
                input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=None,
                video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=inputs.get("second_per_grid_ts"),
                attention_mask=inputs["attention_mask"])
        saved = {key: inputs[key].clone() for key in SAVED_KEYS if key in inputs}
        saved.update(position_ids=position_ids, rope_deltas=rope_deltas)
        torch.save(saved, out / f"inputs_{case}.pt")
        video_positions = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
        grid = inputs["video_grid_thw"][0].tolist()
        entry = {"seq_len": int(inputs["input_ids"].shape[1]), "runs": {}, "video_start": int(video_positions[0]),
                 "tokens_per_frame": grid[1] * grid[2] // 4, "frames": grid[0],
                 "one_frame_segments": one_frame_positions(model, inputs)}
        dense = ask(loaded, case_clip, QUESTION, method="dense", max_new_tokens=NEW_TOKENS)
        entry["runs"]["dense"] = {"answer_ids": dense.answer_ids,
                                  "first_logits": dense.first_token_logits.tolist()}
        for name, setting in SETTINGS.items():
            result = ask(loaded, case_clip, QUESTION, method="flashvid", budget=setting["budget"],
                         params=our_params(setting), max_new_tokens=NEW_TOKENS)
            stats = result.stats
            points = [step.point for step in stats.steps]
            run = {"answer_ids": result.answer_ids, "first_logits": result.first_token_logits.tolist(),
                   "points": points, "kept_ratio": stats.kept_ratio,
                   "vision_tokens_per_layer": stats.vision_tokens_per_layer(),
                   "kept_before_llm": kept_positions(stats, 0),
                   "kept_inside_llm": kept_positions(stats, points[1]) if len(points) > 1 else None}
            if case == "mp4" and all(setting[key] == value for key, value in QWEN_SCRIPT.items()):
                run["cli_answer_ids"] = cli_answer_ids(ckpt, video, setting)  # the CLI runs the family's defaults
            entry["runs"][name] = run
            print(f"ours: {case} {name}: kept {len(run['kept_before_llm'])} then "
                  f"{len(run['kept_inside_llm'] or [])}, kept_ratio {stats.kept_ratio:.4f}, ids {run['answer_ids']}",
                  flush=True)
        results["cases"][case] = entry
    results["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=False).stdout.strip()
    (out / "ours.json").write_text(json.dumps(results))
    run_functions(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
