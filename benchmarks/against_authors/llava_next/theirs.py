"""Their side: LLaVA-NeXT's own LlavaQwenForCausalLM and the authors' FrameFusion on our tiny checkpoint.

    python theirs.py WORK_DIR      (the oracle venv: transformers 4.45.2, torch 2.13.0; see README.md)

PYTHONPATH must hold, in this order: this folder's stubs/, the LLaVA-NeXT checkout, the FrameFusion checkout
(compare.py sets it). Reads WORK_DIR/{ckpt, hub, frames.npy, inputs.pt, job.json} written by ours.py; writes
theirs.json and theirs_logits.pt. Nothing of framefusion (ours) is imported here: the authors' package has the same
name.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WORK = Path(sys.argv[1]).resolve()
os.environ["HF_HUB_CACHE"] = str(WORK / "hub")  # the tiny tower repository LLaVA-NeXT's SigLipVisionTower loads
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"  # llava.conversation reaches for the hub

import llava.model
import numpy as np
import torch
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM
from PIL import Image
from transformers import AutoTokenizer


def _no_nvila(name):
    """Patch (README): the authors' interface.py imports NVILA's LlavaLlamaModel from `llava.model` inside
    try/except ModuleNotFoundError; beside LLaVA-NeXT that name is missing and Python raises ImportError, which
    their except does not catch. Raising ModuleNotFoundError for exactly that name lets their own skip run."""
    if name == "LlavaLlamaModel":
        raise ModuleNotFoundError("NVILA is not installed beside LLaVA-NeXT")
    raise AttributeError(name)


llava.model.__getattr__ = _no_nvila
from framefusion.interface import apply_framefusion  # the authors' package


def load_model(ckpt: Path):
    """What llava.model.builder.load_pretrained_model does for a `llava_qwen` name, in float32 (its float32 branch
    is a pdb breakpoint): the tokenizer by AutoTokenizer, LlavaQwenConfig, LlavaQwenForCausalLM.from_pretrained,
    the tower's image processor."""
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    config = LlavaQwenConfig.from_pretrained(str(ckpt))
    model = LlavaQwenForCausalLM.from_pretrained(str(ckpt), low_cpu_mem_usage=True, attn_implementation="sdpa",
                                                 config=config, torch_dtype=torch.float32)
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    model.eval()
    model.tie_weights()  # as lmms-eval's llava_vid does
    return tokenizer, model, tower.image_processor


def prompt_ids(tokenizer, question: str) -> torch.Tensor:
    """lmms-eval llava_vid with conv_template=qwen_1_5 and no time instruction: <image>\\n + question."""
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + question)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def kv_counter(model):
    """Forward pre-hooks recording the tokens entering every decoder layer's attention during the prefill."""
    counts: list[int] = []

    def record(_module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is not None and hidden.shape[1] > 1:
            counts.append(int(hidden.shape[1]))

    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(record, with_kwargs=True)
    return counts


def main() -> None:
    job = json.loads((WORK / "job.json").read_text())
    ours = torch.load(WORK / "inputs.pt")
    tokenizer, model, processor = load_model(WORK / "ckpt")
    frames = np.load(WORK / "frames.npy")
    video = processor.preprocess(frames, return_tensors="pt")["pixel_values"]  # [T, 3, 384, 384]
    ids = prompt_ids(tokenizer, job["question"])
    ours_ids = ours["input_ids"][0]
    placeholder = ours_ids == job["video_token_id"]
    first = int(placeholder.nonzero()[0])
    collapsed = torch.cat([ours_ids[:first], torch.tensor([IMAGE_TOKEN_INDEX]), ours_ids[first + int(placeholder.sum()):]])
    checks = {"prompt_ids_equal": bool(torch.equal(collapsed, ids[0])),
              "pixels_max_abs_diff": float((ours["pixel_values_videos"][0] - video).abs().max())}
    print("theirs: checks", checks)
    with torch.inference_mode():
        _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, [video],
                                                                            ["video"])
        vision_tokens = embeds.shape[1] - (ids.shape[1] - 1)
        dense_logits = model(input_ids=ids, images=[video], modalities=["video"]).logits[0].float()
    results, logits = {}, {"dense_prefill": dense_logits}
    stored = np.load(WORK / "images.npz")
    for index in range(len(stored.files)):  # dense image prompts as lmms-eval's llava_onevision writes them, before
        # the authors' FrameFusion replaces prepare_inputs_labels_for_multimodal (its copy handles videos only)
        image = Image.fromarray(stored[f"arr_{index}"])
        tiles = process_images([image], processor, model.config)  # anyres_max_9: [1, tiles, 3, 384, 384]
        image_ids = prompt_ids(tokenizer, job["image_question"])
        with torch.inference_mode():
            logits[f"image_{index}_prefill"] = model(input_ids=image_ids, images=tiles, image_sizes=[image.size],
                                                     modalities=["image"]).logits[0].float()
            out = model.generate(inputs=image_ids, images=tiles, image_sizes=[image.size], modalities=["image"],
                                 attention_mask=torch.ones_like(image_ids), do_sample=False, num_beams=1,
                                 max_new_tokens=job["max_new_tokens"], pad_token_id=tokenizer.pad_token_id)
        results[f"image_{index}"] = {"answer_ids": out[0].tolist(), "tiles": int(tiles.shape[1]),
                                     "image_tokens": int(logits[f"image_{index}_prefill"].shape[0]
                                                         - (image_ids.shape[1] - 1))}
        print(f"theirs: image_{index}: {results[f'image_{index}']}")
    counts = kv_counter(model)
    runs = [("dense", None)] + [(name, tuple(values)) for name, values in job["regimes"].items()]
    for name, regime in runs:
        if regime is not None:
            cost, similarity, low = regime
            apply_framefusion(model, cost=cost, similarity_lower_bound=similarity, ratio_lower_bound=low)
        counts.clear()
        try:
            with torch.inference_mode():
                out = model.generate(inputs=ids, images=[video], modalities=["video"],
                                     attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                     max_new_tokens=job["max_new_tokens"], pad_token_id=tokenizer.pad_token_id,
                                     output_logits=True, return_dict_in_generate=True)
        except ValueError as error:  # their "The cost is too small"
            results[name] = {"error": str(error)}
            print(f"theirs: {name}: {error}")
            continue
        new = out.sequences[0].tolist()
        results[name] = {"answer_ids": new, "tokens_per_layer": list(counts), "vision_tokens": int(vision_tokens),
                         "frames": int(video.shape[0])}
        logits[name] = out.logits[0][0].float()
        print(f"theirs: {name}: {new} layers {counts[:4]}...")
    torch.save(logits, WORK / "theirs_logits.pt")
    (WORK / "theirs.json").write_text(json.dumps({"checks": checks, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
