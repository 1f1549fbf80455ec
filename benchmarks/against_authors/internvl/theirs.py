"""The original side: InternVL's own code (OpenGVLab/InternVL, internvl_chat/) and the authors' FrameFusion adapter
(thu-nics/FrameFusion), unmodified, on transformers 4.45.2.

Run in the oracle venv:  python theirs.py WORK_DIR
with INTERNVL_SRC (the checkout's internvl_chat folder) and AUTHORS_SRC (the FrameFusion checkout) set.
Needs WORK_DIR/ours.json, WORK_DIR/frames.npy, the checkpoints and WORK_DIR/<name>_pixels.pt (ours.py).
Prompt and pixels are built by the original code (their conversation template, tokenizer, dynamic_preprocess and
build_transform with max_num=1, as the InternVL video recipe) and compared with ours before anything runs.
Writes WORK_DIR/theirs.json and WORK_DIR/theirs.pt.

One stand-in, because the original cannot run without it on a CPU: the authors' InternLM2 attention calls
`self._flash_attention_forward`, which only InternLM2's flash-attention class has (flash-attn is CUDA-only; on a CPU
the model is built with the eager class and raises AttributeError). `plain_flash_attention` below is set on each
attention instance: softmax attention with flash_attn_func(causal=True)'s bottom-right causal alignment and no
mask, which is what their flash path computes for an unpadded prompt (their model passes no mask then).
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, os.environ["INTERNVL_SRC"])
sys.path.insert(1, os.environ["AUTHORS_SRC"])
from framefusion.interface import apply_framefusion  # noqa: E402  (the authors' package)
from internvl.conversation import get_conv_template  # noqa: E402
from internvl.model.internlm2.tokenization_internlm2 import InternLM2Tokenizer  # noqa: E402
from internvl.model.internvl_chat import InternVLChatModel  # noqa: E402
from internvl.train.dataset import build_transform, dynamic_preprocess  # noqa: E402


def plain_flash_attention(self, q, k, v, attention_mask, query_length, dropout=0.0, softmax_scale=None):
    """q [b, s, H, d], k and v [b, S, H_kv, d] -> [b, s, H, d]; causal aligned to the last key when s > 1."""
    heads, dim = q.shape[2], q.shape[3]
    k = k.repeat_interleave(heads // k.shape[2], dim=2)
    v = v.repeat_interleave(heads // v.shape[2], dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * (softmax_scale or 1 / math.sqrt(dim))
    if query_length > 1:
        s, total = q.shape[1], k.shape[1]
        future = torch.arange(total)[None, :] > (torch.arange(s)[:, None] + total - s)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores.float(), dim=-1).to(q.dtype), v)


def load(folder: Path):
    model = InternVLChatModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    if model.config.llm_config.architectures[0] == "InternLM2ForCausalLM":
        tokenizer = InternLM2Tokenizer.from_pretrained(str(folder))
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), use_fast=False)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    return model, tokenizer


def pixels(model, frames: np.ndarray) -> torch.Tensor:
    """The original video preprocessing: each frame dynamic_preprocess(max_num=1) + build_transform."""
    size = model.config.force_image_size or model.config.vision_config.image_size
    transform = build_transform(is_train=False, input_size=size)
    tiles = [tile for frame in frames for tile in dynamic_preprocess(Image.fromarray(frame), image_size=size,
                                                                     use_thumbnail=True, max_num=1)]
    return torch.stack([transform(tile) for tile in tiles])


def prompt(model, tokenizer, frames: int, question: str):
    """chat()'s prompt for the video recipe's question: (input_ids, attention_mask, eos id)."""
    question = "".join(f"Frame{i + 1}: <image>\n" for i in range(frames)) + question
    template = get_conv_template(model.template)
    template.system_message = model.system_message
    template.append_message(template.roles[0], question)
    template.append_message(template.roles[1], None)
    query = template.get_prompt()
    for _ in range(frames):
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * model.num_image_token + "</img>", 1)
    inputs = tokenizer(query, return_tensors="pt")
    return inputs["input_ids"], inputs["attention_mask"], tokenizer.convert_tokens_to_ids(template.sep.strip())


def generate(model, pixel_values, input_ids, attention_mask, eos, new_tokens):
    """Greedy generation through the model's generate; prefill token counts per layer; first-token logits."""
    layers = model.language_model.model.layers
    lengths = []
    attentions = [getattr(layer, "attention", None) or layer.self_attn for layer in layers]  # InternLM2 / Qwen2
    handles = [attention.register_forward_pre_hook(
        lambda _m, _a, kw: lengths.append(int(kw["hidden_states"].shape[1])), with_kwargs=True)
        for attention in attentions]
    try:
        with torch.no_grad():
            out = model.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                                 max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos,
                                 return_dict_in_generate=True, output_logits=True)
    finally:
        for handle in handles:
            handle.remove()
    return {"answer_ids": out.sequences[0].tolist(), "tokens_per_layer": lengths[:len(layers)]}, out.logits[0][0]


def main(work: Path) -> int:
    ours = json.loads((work / "ours.json").read_text())
    frames = np.load(work / "frames.npy")
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "checkpoints": {}}
    logits = {}
    for name, mine in ours["checkpoints"].items():
        model, tokenizer = load(work / name)
        pixel_values = pixels(model, frames)
        input_ids, attention_mask, eos = prompt(model, tokenizer, len(frames), ours["question"])
        our_pixels = torch.load(work / f"{name}_pixels.pt")["pixel_values_videos"]
        encoded = [tokenizer(text)["input_ids"] for text in ours["tokenizer_texts"]]
        entry = {"tokenizer_ids": encoded, "tokenizer_decoded": [tokenizer.decode(ids, skip_special_tokens=True)
                                                                 for ids in encoded],
                 "input_ids_equal": input_ids[0].tolist() == mine["input_ids"],
                 "pixels_max_abs_diff": float((pixel_values - our_pixels).abs().max()),
                 "tokens_per_frame": int(model.num_image_token), "prompt_length": int(input_ids.shape[1]),
                 "runs": {}}
        with torch.no_grad():
            logits[f"{name}|dense_all"] = model(pixel_values=pixel_values, input_ids=input_ids,
                                                attention_mask=attention_mask,
                                                image_flags=torch.ones(len(pixel_values), 1)).logits[0]
        entry["runs"]["dense"], logits[f"{name}|dense"] = generate(model, pixel_values, input_ids, attention_mask, eos,
                                                                   ours["max_new_tokens"])
        for regime, run in mine["runs"].items():
            if regime == "dense":
                continue
            model, _ = load(work / name)  # their FrameFusion patches the model in place: a fresh one per regime
            params = run["regime"]
            try:
                apply_framefusion(model, params["cost"], params["similarity_lower_bound"], params["ratio_lower_bound"])
                for layer in model.language_model.model.layers:
                    layer.attention._flash_attention_forward = types.MethodType(plain_flash_attention, layer.attention)
                entry["runs"][regime], logits[f"{name}|{regime}"] = generate(model, pixel_values, input_ids,
                                                                             attention_mask, eos,
                                                                             ours["max_new_tokens"])
                entry["runs"][regime]["sparsity_list"] = [float(x) for x in model.framefusion.sparsity_list]
            except Exception as error:  # e.g. their "The cost is too small"
                entry["runs"][regime] = {"error": f"{type(error).__name__}: {error}"}
        result["checkpoints"][name] = entry
        print(f"theirs: {name}: prompt ids equal {entry['input_ids_equal']}, pixels max diff "
              f"{entry['pixels_max_abs_diff']:.1e}", flush=True)
    (work / "theirs.json").write_text(json.dumps(result, indent=1))
    torch.save(logits, work / "theirs.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
