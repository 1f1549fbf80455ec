"""Our side: tiny NVILA checkpoints in the published layout, the regime videos, our dense and FrameFusion answers.

Run with this repository's python (transformers 5.x, our `framefusion`):
    python ours.py WORK_DIR
Writes WORK_DIR/ckpt-<variant>/ (the checkpoints both sides load), WORK_DIR/videos/<regime>.mp4 (copied from the
harness folder when present there), WORK_DIR/inputs/<regime>.npz (the decoded frames both sides use),
WORK_DIR/ours.json and WORK_DIR/ours_tensors.pt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from framefusion.pipeline.answer import ask, model_inputs
from framefusion.pipeline.loading import load_model
from framefusion.tiny.nvila import save_tiny_checkpoint
from framefusion.video import Sampling, write_video

QUESTION = "What is happening in the video?"
MAX_NEW_TOKENS = 8
LAYERS = 28  # the authors' FrameFusion budgets over 28 layers whatever the model's depth: match it
# checkpoint name: (tiny layout, builder settings)
VARIANTS = {
    "nvila-8b-video": ("nvila-8b-video", {"num_layers": LAYERS, "seed": 0}),
    "nvila-lite-2b": ("nvila-lite-2b", {"num_layers": LAYERS, "seed": 1}),
    # the 8B-Video layout with dynamic S2 (as NVILA-8B): 3-scale features, multi-scale image tiles
    "nvila-8b-video-s2": ("nvila-8b-video", {"num_layers": LAYERS, "seed": 2, "dynamic_s2": True,
                                                  "image_aspect_ratio": "dynamic_s2"}),
}
# name: (checkpoint, frames (0: one image instead of a video), clip, cost, similarity_lower_bound, ratio_lower_bound)
REGIMES = {
    "a_video8b_8f_prune_only": ("nvila-8b-video", 8, "random", 0.3, 0.6, 0.1),
    "b_video8b_16f_merge_prune": ("nvila-8b-video", 16, "static_half", 0.3, 0.6, 0.1),
    "c_video8b_32f_oneshot_capped": ("nvila-8b-video", 32, "noisy", 0.5, 0.7, 0.02),
    "d_lite2b_8f_cascade_prune": ("nvila-lite-2b", 8, "static_half", 0.3, 0.6, 0.1),
    "e_lite2b_8f_oneshot_capped": ("nvila-lite-2b", 8, "noisy", 0.3, 0.6, 0.1),
    "f_s2_16f_merge_prune": ("nvila-8b-video-s2", 16, "static_half", 0.3, 0.6, 0.1),
    "g_s2_image_dynamic_s2": ("nvila-8b-video-s2", 0, "random", 0.3, 0.6, 0.1),
    "h_lite2b_image_dynamic": ("nvila-lite-2b", 0, "random", 0.3, 0.6, 0.1),
}
IMAGE_SIZE = (150, 200)  # H, W of the image regimes' picture
HEIGHT, WIDTH = 96, 128  # not square: the frames are resized to the 112 px tiles


def make_frames(kind: str, count: int, seed: int) -> np.ndarray:
    """[count, H, W, 3] uint8: blocky random frames (8 px blocks, so the mp4 stays small)."""
    rng = np.random.default_rng(seed)
    blocks = lambda n: rng.integers(0, 256, (n, HEIGHT // 8, WIDTH // 8, 3)).astype(np.float32)
    if kind == "random":
        small = blocks(count)
    elif kind == "static_half":  # the top half is the same in every frame
        small = blocks(count)
        small[:, : HEIGHT // 16] = small[0, : HEIGHT // 16]
    elif kind == "noisy":  # one picture with per-frame noise growing from 2 to 40
        base = blocks(1)[0]
        small = np.stack([base + rng.normal(0, s, base.shape) for s in np.linspace(2, 40, count)])
    else:
        raise ValueError(kind)
    frames = np.clip(small, 0, 255).astype(np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    return np.ascontiguousarray(frames)


def image_regime(work: Path, name: str, loaded, index: int, tensors: dict) -> dict:
    """One picture (dense only: the methods reduce video tokens): pixels, prompt, logits and greedy ids."""
    rng = np.random.default_rng(200 + index)
    image = np.ascontiguousarray(rng.integers(0, 256, (IMAGE_SIZE[0] // 10, IMAGE_SIZE[1] // 10, 3), dtype=np.uint8)
                                 .repeat(10, axis=0).repeat(10, axis=1))
    np.savez(work / "inputs" / f"{name}.npz", image=image)
    model, processor = loaded.model, loaded.processor
    inputs = model_inputs(loaded, [], QUESTION, images=[image])
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    dense = ask(loaded, [], QUESTION, method="dense", images=[image], max_new_tokens=MAX_NEW_TOKENS)
    placeholders = int((inputs["input_ids"] == model.config.image_token_id).sum())
    kind, tiles, _ = inputs["image_grids"][0].tolist()
    units = tiles if kind == 1 else 1  # dynamic: every tile is an image with its own end tokens
    image_tokens = placeholders + units * len(model.config.encoder_token_ids.get("\n", []))  # + their "\n"
    tensors[f"{name}|pixels"] = inputs["pixel_values"].clone()
    tensors[f"{name}|dense_logits"] = logits.clone()
    tensors[f"{name}|dense_first"] = dense.first_token_logits.clone()
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                          {"type": "text", "text": QUESTION}]}])
    if kind == 1:  # dynamic: one <image> per tile, each followed by "\n", as VILA rewrites the prompt
        prompt = prompt.replace("<image>", "<image>\n" * tiles, 1)
    print(f"ours: {name}: seq {inputs['input_ids'].shape[1]}, image tokens {image_tokens} (end tokens included), "
          f"grids {inputs['image_grids'].tolist()}", flush=True)
    return {"variant": loaded.name.rsplit("ckpt-", 1)[-1], "frames": 0, "clip": "image", "image_seed": 200 + index,
            "prompt_ids": [int(i) for i in processor.tokenizer(prompt).input_ids],
            "expanded_ids": [int(i) for i in inputs["input_ids"][0]], "seq_len": int(inputs["input_ids"].shape[1]),
            "image_tokens": image_tokens, "dense": {"answer_ids": dense.answer_ids}}


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for checkpoint, (layout, kw) in VARIANTS.items():
        ckpt = work / f"ckpt-{checkpoint}"
        if not (ckpt / "config.json").exists():
            save_tiny_checkpoint(ckpt, layout, **kw)
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,
                                    check=False).stdout.strip()
    results = {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
               "question": QUESTION, "max_new_tokens": MAX_NEW_TOKENS, "variants": VARIANTS, "regimes": {}}
    tensors: dict[str, torch.Tensor] = {}
    loaded_models: dict[str, object] = {}
    (work / "videos").mkdir(exist_ok=True)
    (work / "inputs").mkdir(exist_ok=True)
    for index, (name, (variant, count, kind, cost, sim, ratio)) in enumerate(REGIMES.items()):
        if variant not in loaded_models:
            loaded_models[variant] = load_model(str(work / f"ckpt-{variant}"), device="cpu", dtype="fp32")
        loaded = loaded_models[variant]
        if count == 0:
            results["regimes"][name] = image_regime(work, name, loaded, index, tensors)
            continue
        video = work / "videos" / f"{name}.mp4"
        shipped = HERE / "videos" / f"{name}.mp4"
        if shipped.exists():
            shutil.copy(shipped, video)
        else:
            write_video(video, make_frames(kind, count, seed=100 + index), fps=8.0)
        clip = Sampling(num_frames=count).load(video)
        np.savez(work / "inputs" / f"{name}.npz", frames=clip.frames)
        model, processor = loaded.model, loaded.processor
        inputs = model_inputs(loaded, [clip], QUESTION)
        prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                              {"type": "text", "text": QUESTION}]}])
        prompt_ids = processor.tokenizer(prompt).input_ids
        with torch.no_grad():
            dense_logits = model(**inputs).logits[0]
            embeds = model.model.get_input_embeddings()(inputs["input_ids"])
            features = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grids"])
            mask = inputs["input_ids"] == model.config.video_token_id
            embeds = embeds.masked_scatter(mask[..., None], features)
        streams = model.model.video_streams(inputs["input_ids"], inputs["video_grids"])
        span = torch.cat([s["positions"] for s in streams]).sort().values  # every video token, sequence order
        dense = ask(loaded, [clip], QUESTION, method="dense", max_new_tokens=MAX_NEW_TOKENS)
        params = {"similarity_lower_bound": sim, "ratio_lower_bound": ratio}
        ff = ask(loaded, [clip], QUESTION, method="framefusion", budget=cost, params=params,
                 max_new_tokens=MAX_NEW_TOKENS)
        tensors[f"{name}|pixels"] = inputs["pixel_values_videos"].clone()
        tensors[f"{name}|dense_logits"] = dense_logits.clone()
        tensors[f"{name}|media_embeds"] = embeds[0, span].clone()
        tensors[f"{name}|dense_first"] = dense.first_token_logits.clone()
        tensors[f"{name}|ff_first"] = ff.first_token_logits.clone()
        results["regimes"][name] = {
            "variant": variant, "frames": count, "clip": kind, "video_seed": 100 + index,
            "params": {"cost": cost, "similarity_lower_bound": sim, "ratio_lower_bound": ratio},
            "prompt_ids": [int(i) for i in prompt_ids], "seq_len": int(inputs["input_ids"].shape[1]),
            "vision_tokens": int(span.numel()), "video_span": [int(span[0]), int(span[-1])],
            "dense": {"answer_ids": dense.answer_ids, "tokens_per_layer": dense.tokens_per_layer},
            "framefusion": {"answer_ids": ff.answer_ids, "tokens_per_layer": ff.tokens_per_layer,
                            "vision_tokens": ff.vision_tokens, "kept_ratio": ff.kept_ratio,
                            "steps": [dict(s.__dict__) for s in ff.stats.steps]},
        }
        print(f"ours: {name}: seq {inputs['input_ids'].shape[1]}, video tokens {span.numel()}, "
              f"FF KV {ff.tokens_per_layer[:3]}... kept {ff.kept_ratio:.3f}", flush=True)
    torch.save(tensors, work / "ours_tensors.pt")
    (work / "ours.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
