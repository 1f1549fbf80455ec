"""Our side of the MiniCPM-V 2.6 check (this repository's venv): checkpoint, frames, inputs, dense and FrameFusion.

    python ours.py WORK_DIR      (WORK_DIR/spec.json written by compare.py)

Writes to WORK_DIR: the tiny checkpoint (ckpt/), each clip's sampled frames (frames_<clip>.npy, [T, H, W, 3] uint8,
decoded by framefusion.video from the committed .mp4), our processor's inputs (inputs_<clip>.pt) and ours.json:
per run the greedy ids, the logits of every generated step, and for FrameFusion the per-layer token counts. Each
FrameFusion run also goes through the CLI (`framefusion ask CLIP --json`), whose ids and counts are recorded too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from framefusion.api import apply_framefusion, last_stats, remove_framefusion  # noqa: E402
from framefusion.models.minicpmv.vision import navit_position_ids  # noqa: E402
from framefusion.pipeline.loading import load_model  # noqa: E402
from framefusion.tiny.minicpmv import TinyMiniCPMV, save_tiny_minicpmv2_6  # noqa: E402
from framefusion.video import load_video  # noqa: E402
from framefusion.video.prompting import prepare_inputs  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(model, inputs, max_new_tokens: int, repetition_penalty: float | None = None) -> dict:
    """Greedy `generate` (plain unless a repetition penalty is given): new ids and the raw logits of every step."""
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, repetition_penalty=repetition_penalty)
    new = out.sequences[0, inputs["input_ids"].shape[-1]:]
    return {"ids": new.tolist(), "logits": torch.stack([step[0].float() for step in out.logits]).tolist()}


def cli_ask(ckpt: Path, clip: Path, spec: dict, regime: dict) -> dict:
    """`framefusion ask CLIP --json` with the regime's settings (a fresh process, as a user runs it)."""
    question = regime.get("question", spec["question"])
    command = [sys.executable, "-m", "ffcli.main", "ask", str(clip), question, "--model", str(ckpt),
               "--frames", str(spec["frames"]), "--max-new-tokens", str(spec["max_new_tokens"]), "--device", "cpu",
               "--dtype", "fp32", "--json"]
    if regime["method"] == "framefusion":
        command += ["--method", "framefusion", "--budget", str(regime["cost"]), "--similarity",
                    str(regime["similarity"]), "--ratio-lower-bound", str(regime["ratio_lower_bound"])]
    else:
        command += ["--method", "dense"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO))
    if done.returncode != 0:
        raise SystemExit(f"ours: the CLI failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return {key: result[key] for key in ("answer_ids", "tokens_per_layer", "vision_tokens", "frames", "kept_ratio")} \
        | {"command": shlex.join(["framefusion", *command[3:]])}


def main() -> None:
    work = Path(sys.argv[1])
    spec = json.loads((work / "spec.json").read_text())
    ckpt = save_tiny_minicpmv2_6(work / "ckpt", TinyMiniCPMV(**spec["sizes"]))
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32")
    model, processor = loaded.model, loaded.processor
    report = {"checkpoint": {name: sha256(ckpt / name) for name in ("model.safetensors", "tokenizer.json",
                                                                   "config.json")},
              "transformers": __import__("transformers").__version__, "torch": torch.__version__, "runs": {}}
    for clip_name in spec["clips"]:
        clip_path = HERE / f"{clip_name}.mp4"
        clip = load_video(str(clip_path), num_frames=spec["frames"])
        np.save(work / f"frames_{clip_name}.npy", np.asarray(clip.frames))
        inputs = prepare_inputs(processor, [clip], spec["question"])
        torch.save(dict(inputs), work / f"inputs_{clip_name}.pt")
        default_inputs = inputs
        print(f"ours: {clip_name}: {tuple(clip.frames.shape)} frames, {inputs['input_ids'].shape[-1]} prompt tokens",
              flush=True)
        for name, regime in spec["regimes"].items():
            if regime["clip"] != clip_name:
                continue
            question = regime.get("question", spec["question"])
            inputs = prepare_inputs(processor, [clip], question) if "question" in regime else default_inputs
            remove_framefusion(model)
            if regime["method"] == "framefusion":
                apply_framefusion(model, cost=regime["cost"], similarity_lower_bound=regime["similarity"],
                                  ratio_lower_bound=regime["ratio_lower_bound"])
            run = generate(model, inputs, spec["max_new_tokens"], regime.get("repetition_penalty"))
            stats = last_stats(model)
            if stats is not None:
                run |= {"tokens_per_layer": stats.tokens_per_layer(), "ffn_tokens_per_layer": stats.ffn_tokens_per_layer(),
                        "vision_tokens": stats.num_vision_tokens, "kept_ratio": stats.kept_ratio,
                        "steps": [{"point": s.point, "kind": s.kind, "before": s.vision_before, "removed": s.removed,
                                   "ratio": s.ratio, "capped": s.capped} for s in stats.steps]}
            remove_framefusion(model)
            if "repetition_penalty" not in regime:  # the CLI decodes plain greedy only
                run["cli"] = cli_ask(ckpt, clip_path, spec, regime)
            report["runs"][name] = run
            print(f"ours: {name}: ids {run['ids']}", flush=True)
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    report["navit_position_ids"] = [navit_position_ids(rows, cols, side).tolist() for rows, cols in spec["navit_sizes"]]
    (work / "ours.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
