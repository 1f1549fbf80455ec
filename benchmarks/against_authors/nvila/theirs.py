"""The original side: VILA's code (NVlabs/VILA 078f91c, transformers 4.46) and the authors' FrameFusion adapter.

Run in the oracle venv with PYTHONPATH=$ORACLE/stubs:$ORACLE/vila:$ORACLE/ff_src (see README.md):
    python theirs.py WORK_DIR
Reads WORK_DIR/ckpt-<variant>/ and WORK_DIR/inputs/<regime>.npz (ours.py), writes WORK_DIR/theirs.json and
WORK_DIR/theirs_tensors.pt. Nothing of VILA or the authors' code is modified; see README.md for the stand-ins.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import vila_stubs  # noqa: F401  (stand-ins for training-only imports; must come before llava)
from llava.model.multimodal_encoder import siglip_encoder

_from_pretrained = siglip_encoder.SiglipVisionModel.from_pretrained.__func__


def _sdpa_tower(cls, *args, **kwargs):
    """VILA hard-codes flash_attention_2 for the SigLIP tower, which needs a CUDA GPU: use its sdpa attention."""
    kwargs["attn_implementation"] = "sdpa"
    return _from_pretrained(cls, *args, **kwargs)


siglip_encoder.SiglipVisionModel.from_pretrained = classmethod(_sdpa_tower)

import transformers
from framefusion.interface import apply_framefusion
from llava.constants import MEDIA_TOKENS
from llava.mm_utils import process_image, process_images
from llava.model import LlavaLlamaModel
from llava.utils.tokenizer import tokenize_conversation
from PIL import Image
from transformers import AutoConfig


def load_vila(path: Path) -> LlavaLlamaModel:
    """VILA's load_pretrained_model for a multimodal checkpoint, in fp32 on the CPU (it forces fp16 on CUDA)."""
    config = AutoConfig.from_pretrained(str(path))
    config.resume_path = str(path)
    config.model_dtype = "torch.float32"  # prepare_config_for_eval sets it from the requested dtype
    model = LlavaLlamaModel(config=config, low_cpu_mem_usage=True, attn_implementation="sdpa")
    model.resize_token_embeddings(len(model.tokenizer))  # as load_pretrained_model does
    return model.eval()


def attention_lengths(model):
    """Forward pre-hooks recording every prefill self_attn input length (the tokens entering each layer)."""
    lengths: list[int] = []

    def record(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] > 1:
            lengths.append(int(hidden.shape[1]))

    handles = [layer.self_attn.register_forward_pre_hook(record, with_kwargs=True) for layer in model.llm.model.layers]
    return lengths, handles


def generate(model, input_ids, media, new_tokens, media_config=None):
    """VILA's generate (media embedded, then the LLM's generate on the embeddings), greedy."""
    stops = model.tokenizer.stop_token_ids
    media_config = media_config if media_config is not None else defaultdict(dict)
    output = model.generate(input_ids=input_ids, media=media, media_config=media_config, max_new_tokens=new_tokens,
                            do_sample=False, return_dict_in_generate=True, output_logits=True, eos_token_id=stops,
                            pad_token_id=model.tokenizer.pad_token_id)
    return [int(t) for t in output.sequences[0].tolist()], output.logits[0][0].float().clone()


def image_inputs(model, image: Image.Image, question: str):
    """One picture as VILA's generate_content prepares it: (input_ids, media, media_config)."""
    config, media_config = model.config, defaultdict(dict)
    text = MEDIA_TOKENS["image"] + question
    if config.image_aspect_ratio in ["dynamic", "dynamic_s2"]:
        config.image_processor = model.vision_tower.image_processor
        if config.image_aspect_ratio == "dynamic":
            images = process_image(image, config, None, enable_dynamic_res=True)
            text = text.replace(MEDIA_TOKENS["image"], f"{MEDIA_TOKENS['image']}\n" * images.shape[0])
        else:
            if type(config.s2_scales) is str:
                config.s2_scales = list(map(int, config.s2_scales.split(",")))
            images, block_sizes = process_image(image, config, None, enable_dynamic_s2=True)
            media_config["image"]["block_sizes"] = [block_sizes]
    else:
        images = process_images([image], model.vision_tower.image_processor, config)
    input_ids = tokenize_conversation([{"from": "human", "value": text}], model.tokenizer, add_generation_prompt=True)
    return input_ids[None], {"image": [tile for tile in images]}, media_config


def run_image(model, work: Path, name: str, question: str, new_tokens: int, tensors: dict) -> dict:
    """Dense logits and greedy ids of one image regime."""
    image = Image.fromarray(np.load(work / "inputs" / f"{name}.npz")["image"])
    input_ids, media, media_config = image_inputs(model, image, question)
    with torch.no_grad():
        embeds = model._LlavaMetaForCausalLM__embed_media_tokens(media, media_config)["image"]
        logits = model(input_ids=input_ids, media=media, media_config=media_config).logits[0]
    ids, first = generate(model, input_ids, media, new_tokens, media_config)
    tensors[f"{name}|pixels"] = torch.stack(media["image"]).clone()
    tensors[f"{name}|dense_logits"] = logits.clone()
    tensors[f"{name}|dense_first"] = first
    tokens = sum(int(e.shape[0]) for e in embeds)
    print(f"theirs: {name}: dense done, {tokens} image tokens (end tokens included)", flush=True)
    return {"prompt_ids": [int(i) for i in input_ids[0]], "image_tokens": tokens,
            "seq_len": int(input_ids.shape[1] - len(embeds) + tokens), "dense": {"answer_ids": ids}}


def main(work: Path) -> None:
    ours = json.loads((work / "ours.json").read_text())
    question, new_tokens = ours["question"], ours["max_new_tokens"]
    results = {"transformers": transformers.__version__, "torch": torch.__version__, "regimes": {}}
    tensors: dict[str, torch.Tensor] = {}
    by_variant = defaultdict(list)
    for name, regime in ours["regimes"].items():
        by_variant[regime["variant"]].append(name)
    for variant, names in by_variant.items():
        model = load_vila(work / f"ckpt-{variant}")
        prepared = {}
        for name in names:  # dense first: the authors' apply_framefusion patches the model in place
            if ours["regimes"][name]["frames"] == 0:
                results["regimes"][name] = run_image(model, work, name, question, new_tokens, tensors)
                continue
            frames = np.load(work / "inputs" / f"{name}.npz")["frames"]
            images = [Image.fromarray(frame) for frame in frames]
            pixels = process_images(images, model.vision_tower.image_processor, model.config)
            conversation = [{"from": "human", "value": MEDIA_TOKENS["video"] + question}]  # as extract_media writes it
            input_ids = tokenize_conversation(conversation, model.tokenizer, add_generation_prompt=True)[None]
            media = {"video": [pixels]}
            with torch.no_grad():
                embeds = model._LlavaMetaForCausalLM__embed_media_tokens(media, defaultdict(dict))["video"][0]
                logits = model(input_ids=input_ids, media=media, media_config=defaultdict(dict)).logits[0]
            ids, first = generate(model, input_ids, media, new_tokens)
            tensors[f"{name}|pixels"] = pixels.clone()
            tensors[f"{name}|media_embeds"] = embeds.clone()
            tensors[f"{name}|dense_logits"] = logits.clone()
            tensors[f"{name}|dense_first"] = first
            results["regimes"][name] = {"prompt_ids": [int(i) for i in input_ids[0]], "vision_tokens": int(embeds.shape[0]),
                                        "seq_len": int(input_ids.shape[1] - 1 + embeds.shape[0]),
                                        "dense": {"answer_ids": ids}}
            prepared[name] = (input_ids, media)
            print(f"theirs: {name}: dense done, {embeds.shape[0]} video tokens", flush=True)
        for name in (n for n in names if ours["regimes"][n]["frames"]):
            params = ours["regimes"][name]["params"]
            apply_framefusion(model, params["cost"], params["similarity_lower_bound"], params["ratio_lower_bound"])
            lengths, handles = attention_lengths(model)
            try:
                ids, first = generate(model, *prepared[name], new_tokens)
            except ValueError as error:  # their code refuses budgets below what layer 0 already spends
                results["regimes"][name]["framefusion"] = {"error": str(error)}
                continue
            finally:
                for handle in handles:
                    handle.remove()
            tensors[f"{name}|ff_first"] = first
            results["regimes"][name]["framefusion"] = {"answer_ids": ids, "tokens_per_layer": lengths,
                                                       "sparsity_list": list(model.framefusion.sparsity_list)}
            print(f"theirs: {name}: FrameFusion KV {lengths[:3]}...", flush=True)
    torch.save(tensors, work / "theirs_tensors.pt")
    (work / "theirs.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
