"""The original side of the MiniCPM-V 2.6 check (the oracle venv: transformers 4.45.2, torch 2.13).

    $ORACLE_DIR/venv/bin/python theirs.py WORK_DIR

Runs the published remote code (404805854/minicpmv2.6-onnx @ 8490e59, the seven files of openbmb/MiniCPM-V-2_6,
imported unmodified as the package `minicpmv26_remote` from $ORACLE_DIR/remote) on the checkpoint ours.py wrote,
and the authors' FrameFusion (thu-nics/FrameFusion @ fbec1d2, from $ORACLE_DIR/authors). Each run goes through
the original `chat()` with the model card's video settings (frames as images, max_slice_nums=2,
use_image_id=False) and plain greedy decoding (do_sample=False, repetition_penalty=1.0); the harness wraps the
model's `generate` only to record chat()'s inputs and to ask for ids and logits instead of text. Per-layer token
counts are read with forward pre-hooks on each decoder layer's self_attn (its input = its KV cache) and mlp.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import typing
from pathlib import Path

import numpy as np
import torch

ORACLE = Path(os.environ.get("ORACLE_DIR", "/tmp/minicpmv_oracle"))
sys.path[:0] = [str(ORACLE / "remote"), str(ORACLE / "authors")]

import transformers  # noqa: E402,F401  (imported first: it looks for torchvision once, and must not find the stub)
from PIL import Image  # noqa: E402


def stub_torchvision(folder: Path) -> None:
    """An empty `torchvision` (and `torchvision.transforms`) for the two imports that do not use it.

    modeling_minicpmv.py imports torchvision and never uses it; the authors' utils.py imports torchvision.transforms
    for saving frames to disk. PyPI's torchvision for torch 2.13 fails to load its operators with the CPU torch of
    the oracle venv, so the venv has none, and these empty modules stand in.
    """
    package = folder / "torchvision"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Empty stand-in (see theirs.py)."""\n')
    (package / "transforms.py").write_text('"""Empty stand-in (see theirs.py)."""\n')
    sys.path.append(str(folder))


stub_torchvision(Path(sys.argv[1]) / "stubs")
# resampler.py takes `List` from `from torch.nn.functional import *`, which the torch it was written for (2.1 to 2.4)
# re-exported from typing and torch 2.13 no longer does; the name is put where the star import used to put it.
builtins.List = typing.List

from minicpmv26_remote.image_processing_minicpmv import MiniCPMVImageProcessor  # noqa: E402
from minicpmv26_remote.modeling_minicpmv import MiniCPMV  # noqa: E402
from minicpmv26_remote.processing_minicpmv import MiniCPMVProcessor  # noqa: E402
from minicpmv26_remote.tokenization_minicpmv_fast import MiniCPMVTokenizerFast  # noqa: E402


class Recorder:
    """Wraps the model's generate: keeps chat()'s inputs, returns ids and raw logits instead of decoded text."""

    def __init__(self, model):
        self.original = model.generate
        self.inputs = self.output = None
        model.generate = self

    def __call__(self, **kwargs):
        self.inputs = kwargs
        self.output = self.original(**{**kwargs, "decode_text": False, "output_logits": True,
                                       "return_dict_in_generate": True})
        return self.output


class LayerCounts:
    """Tokens entering each decoder layer's attention and MLP in the first (prefill) forward."""

    def __init__(self, layers):
        self.attention, self.mlp, self.handles = {}, {}, []
        for index, layer in enumerate(layers):
            self.handles.append(layer.self_attn.register_forward_pre_hook(self._hook(self.attention, index),
                                                                          with_kwargs=True))
            self.handles.append(layer.mlp.register_forward_pre_hook(self._hook(self.mlp, index), with_kwargs=True))

    @staticmethod
    def _hook(store, index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            store.setdefault(index, hidden.shape[1])  # the first call is the prefill
        return hook

    def counts(self):
        return [self.attention[i] for i in sorted(self.attention)], [self.mlp[i] for i in sorted(self.mlp)]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def navit_ids(model, sizes):
    """The position ids the original vision embeddings give slices of these (rows, cols) patch grids."""
    embeddings, seen = model.vpm.embeddings, []
    handle = embeddings.position_embedding.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    patch = embeddings.patch_size
    try:
        for rows, cols in sizes:
            pixels = torch.zeros(1, 3, patch, rows * cols * patch)  # the original's patch-strip layout
            mask = torch.ones(1, 1, rows * cols, dtype=torch.bool)
            embeddings(pixels, mask, torch.tensor([[rows, cols]], dtype=torch.int32))
    finally:
        handle.remove()
    return [ids[0].tolist() for ids in seen]


def chat(model, processor, tokenizer, frames, question, max_new_tokens, **generation):
    """The original chat() on the video recipe; returns (recorder, output)."""
    recorder = Recorder(model)
    msgs = [{"role": "user", "content": [Image.fromarray(frame) for frame in frames] + [question]}]
    try:
        output = model.chat(image=None, msgs=msgs, tokenizer=tokenizer, processor=processor,
                            max_new_tokens=max_new_tokens, max_inp_length=32768, max_slice_nums=2, use_image_id=False,
                            **generation)
    finally:
        del model.generate  # back to the class's method
    return recorder, output


def main() -> None:
    work = Path(sys.argv[1])
    spec = json.loads((work / "spec.json").read_text())
    ckpt = str(work / "ckpt")
    tokenizer = MiniCPMVTokenizerFast.from_pretrained(ckpt)
    processor = MiniCPMVProcessor(image_processor=MiniCPMVImageProcessor.from_pretrained(ckpt), tokenizer=tokenizer)
    model = MiniCPMV.from_pretrained(ckpt, torch_dtype=torch.float32, attn_implementation="sdpa").eval()
    greedy = {"sampling": True, "do_sample": False, "repetition_penalty": 1.0}  # chat() would add 1.05 otherwise
    report = {"runs": {}, "inputs": {}}
    applied = False
    for name, regime in spec["regimes"].items():
        frames = np.load(work / f"frames_{regime['clip']}.npy")
        if regime["method"] == "framefusion":
            from framefusion.interface import apply_framefusion  # the authors' package

            apply_framefusion(model, cost=regime["cost"], similarity_lower_bound=regime["similarity"],
                              ratio_lower_bound=regime["ratio_lower_bound"])
            model.num_frames = len(frames)  # their get_vllm_embedding reads it
            applied = True
        elif applied:
            raise SystemExit("theirs: dense runs must come before FrameFusion ones (it cannot be removed)")
        counter = LayerCounts(model.llm.model.layers)
        settings = greedy if "repetition_penalty" not in regime else {"sampling": True, "do_sample": False}
        question = regime.get("question", spec["question"])
        recorder, _ = chat(model, processor, tokenizer, frames, question, spec["max_new_tokens"], **settings)
        counter.remove()
        kv, mlp = counter.counts()
        inputs = recorder.inputs
        bounds = inputs["image_bound"][0]
        run = {"ids": recorder.output.sequences[0].tolist(),  # generate on inputs_embeds returns the new ids only
               "logits": torch.stack([step[0].float() for step in recorder.output.logits]).tolist(),
               "tokens_per_layer": kv, "ffn_tokens_per_layer": mlp,
               "masked_positions": torch.nonzero(inputs["attention_mask"][0] == 0).flatten().tolist(),
               "tokens_per_slice": sorted({int(b[1] - b[0]) for b in bounds})}
        if regime["method"] == "framefusion":
            fusion = model.framefusion
            run |= {"vision_tokens": int(fusion.image_token_length), "frame_unit": int(fusion.patch_num),
                    "merge_ratios": [float(r) for r in fusion.sparsity_list]}
        report["runs"][name] = run
        if regime["clip"] not in report["inputs"]:
            report["inputs"][regime["clip"]] = True
            torch.save({"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"],
                        "tgt_sizes": inputs["tgt_sizes"], "image_bound": bounds}, work / f"theirs_inputs_{regime['clip']}.pt")
        print(f"theirs: {name}: ids {run['ids']}", flush=True)
    report["navit_position_ids"] = navit_ids(model, spec["navit_sizes"])
    (work / "theirs.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
