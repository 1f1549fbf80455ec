"""Our side: the tiny original-format checkpoint, the lossless clip, and framefusion's answers on it.

    python ours.py WORK_DIR        (this repository's venv; writes everything under WORK_DIR)

Writes ckpt/ (the checkpoint), hub/ (its tower repository, for LLaVA-NeXT's loader), clip.mkv, frames.npy (the
frames framefusion samples from the clip: what both sides see), inputs.pt (our input_ids and pixel tensor),
job.json (question, regimes, generation length for theirs.py), ours.json and ours_logits.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from recipe import (
    FRAMES,
    IMAGE_QUESTION,
    MAX_NEW_TOKENS,
    QUESTION,
    REGIMES,
    image_arrays,
    weights_digest,
    write_checkpoint,
    write_clip,
)

from framefusion.pipeline.answer import ask, model_inputs
from framefusion.pipeline.loading import load_model
from framefusion.video import Sampling


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(work / "ckpt", tower_cache=work / "hub")
    clip_file = write_clip(work / "clip.mkv")
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32")
    clip = Sampling(num_frames=FRAMES).load(clip_file)
    np.save(work / "frames.npy", clip.frames)
    inputs = model_inputs(loaded, [clip], QUESTION)
    torch.save({key: value for key, value in inputs.items()}, work / "inputs.pt")
    with torch.inference_mode():
        dense_logits = loaded.model(**inputs).logits[0].float()  # [N, vocab]
    results, first_logits = {}, {"dense_prefill": dense_logits}
    runs = {"dense": ("dense", 1.0, {})}
    runs.update({name: ("framefusion", cost, {"similarity_lower_bound": sim, "ratio_lower_bound": low})
                 for name, (cost, sim, low) in REGIMES.items()})
    for name, (method, budget, params) in runs.items():
        result = ask(loaded, clip, QUESTION, method=method, budget=budget, params=params,
                     max_new_tokens=MAX_NEW_TOKENS)
        steps = [(step.point, step.kind, step.removed) for step in result.stats.steps] if result.stats else []
        results[name] = {
            "method": method, "budget": budget, "params": params,
            "answer_ids": [int(i) for i in result.answer_ids], "tokens_per_layer": list(result.tokens_per_layer),
            "vision_tokens": result.vision_tokens, "frames": result.frames, "kept_ratio": result.kept_ratio,
            "steps": steps,
        }
        first_logits[name] = result.first_token_logits
        print(f"ours: {name}: {results[name]['answer_ids']} layers {result.tokens_per_layer[:4]}... steps {steps}")
    images = image_arrays()
    np.savez(work / "images.npz", *images)
    for index, image in enumerate(images):  # dense, one image per prompt (llava_onevision's anyres_max_9 tiling)
        image_inputs = model_inputs(loaded, [], IMAGE_QUESTION, images=[Image.fromarray(image)])
        with torch.inference_mode():
            first_logits[f"image_{index}_prefill"] = loaded.model(**image_inputs).logits[0].float()
            out = loaded.model.generate(**image_inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        results[f"image_{index}"] = {"answer_ids": out[0, image_inputs["input_ids"].shape[1]:].tolist(),
                                     "tiles": int(image_inputs["image_tiles"][0]),
                                     "image_tokens": int((image_inputs["input_ids"] ==
                                                          loaded.model.config.image_token_id).sum())}
        print(f"ours: image_{index}: {results[f'image_{index}']}")
    torch.save(first_logits, work / "ours_logits.pt")
    (work / "ours.json").write_text(json.dumps({"weights_sha256": weights_digest(ckpt), "runs": results}, indent=1))
    (work / "job.json").write_text(json.dumps({"question": QUESTION, "max_new_tokens": MAX_NEW_TOKENS,
                                               "image_question": IMAGE_QUESTION,
                                               "regimes": REGIMES,
                                               "video_token_id": loaded.model.config.video_token_id}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
