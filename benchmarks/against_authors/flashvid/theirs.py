"""The authors' side: FlashVID's own code (Fanziyang-v/FlashVID @1d37422) on the same checkpoint and inputs.

Run in the oracle venv (transformers 4.57.3) with their checkout on PYTHONPATH (see README.md):
    PYTHONPATH=$FLASHVID_SRC python theirs.py WORK_DIR
Reads WORK_DIR/ckpt and WORK_DIR/ours/{inputs_<case>.pt, functions.pt}; writes WORK_DIR/ckpt457 (the config in
the 4.57 layout, the weights linked) and WORK_DIR/theirs/theirs.json.

Patches, none inside their code: (1) their Qwen2.5-VL vision attention asserts flash_attention_2 and calls it with
cu_seqlens: a plain-torch varlen stand-in is registered under that name, for the vision tower only; (2) the mRoPE
positions: transformers' get_rope_index returns the positions our side computed (4.57.3 truncates a fractional
seconds-per-grid to an integer and resumes the text at another index than 5.x; the table says whether it mattered);
(3) flashvid() is not re-entrant (a second call makes its generate wrapper wrap itself: RecursionError), so the
original generate is put back before each setting's flashvid() call; (4) every FlashVID run is made twice: with
their density noise (seed 0) and with torch.rand_like returning our deterministic tie-break ramp instead.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from settings import FUNCTION_CASES, NEW_TOKENS, SETTINGS, their_kwargs


def convert_checkpoint(source: Path, target: Path) -> Path:
    """The checkpoint's config in the transformers 4.57 layout (rope_scaling / rope_theta), the files linked."""
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    text = config["text_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope["rope_theta"]
    text["rope_scaling"] = {"type": "mrope", "rope_type": "default", "mrope_section": rope["mrope_section"]}
    config["vision_config"].pop("rope_parameters", None)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
                "intermediate_size", "rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings"):
        config[key] = text[key]  # 4.57 still reads some of these at the top level
    (target / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("model.safetensors", "generation_config.json"):
        link = target / name
        if not link.exists():
            link.symlink_to(source / name)
    return target


def varlen_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                     cu_seq_lens_q=None, **kwargs):
    """Plain-torch stand-in for flash-attn's varlen kernel: softmax attention inside each cu_seqlens span.
    query, key, value [1, H, S, d] -> ([1, S, H, d], None)."""
    bounds = cu_seq_lens_q.tolist()
    out = torch.empty_like(query)
    for start, end in itertools.pairwise(bounds):
        weights = torch.softmax((query[..., start:end, :] @ key[..., start:end, :].transpose(-1, -2)).float()
                                * scaling, dim=-1).to(query.dtype)
        out[..., start:end, :] = weights @ value[..., start:end, :]
    return out.transpose(1, 2).contiguous(), None


def generate(model, inputs):
    """Greedy ids and first-token logits of their generate."""
    keys = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    with torch.no_grad():
        out = model.generate(**{k: inputs[k] for k in keys if k in inputs}, max_new_tokens=NEW_TOKENS,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
    prompt = inputs["input_ids"].shape[1]
    return out.sequences[0, prompt:].tolist(), out.logits[0][0].float()


@contextmanager
def density_noise(kind: str):
    """Their DPC-kNN density noise, torch.rand_like(density) * 1e-6: "seed0" (theirs, seed 0) or "ramp" (patch (4):
    rand_like returns (n - j) / n for token j of n, the deterministic tie-break of our clustering.py)."""
    torch.manual_seed(0)
    if kind == "seed0":
        yield
        return
    original = torch.rand_like

    def ramp(tensor, *args, **kwargs):
        n = tensor.shape[-1]
        return ((n - torch.arange(n, dtype=torch.float64)) / n).to(tensor.dtype).expand_as(tensor).clone()

    torch.rand_like = ramp
    try:
        yield
    finally:
        torch.rand_like = original


NOISE = ("seed0", "ramp")


def record_positions(model, layer: int):
    """Pre-hooks recording, in prefill, the original positions of the tokens entering the decoder (cache_position
    after their compression) and entering layer `layer` (after their prune)."""
    seen = {}

    def entering(name):
        def hook(_module, args, kwargs):
            position = kwargs.get("cache_position")
            if position is not None and position.numel() > 1:
                seen[name] = position.tolist()
        return hook

    text = model.model.language_model
    handles = [text.register_forward_pre_hook(entering("decoder"), with_kwargs=True)]
    if layer < len(text.layers):
        handles.append(text.layers[layer].register_forward_pre_hook(entering("layer"), with_kwargs=True))
    return seen, handles


def run_functions(work: Path) -> dict:
    """Their flashvid_compression on our random feature sets (the authors' counts), under each noise."""
    from flashvid.configuration_flashvid import FlashVidConfig
    from flashvid.utils import flashvid_compression

    cases = torch.load(work / "ours" / "functions.pt")
    results, tokens = {}, {}
    for name, case in FUNCTION_CASES.items():
        results[name] = {}
        for noise in NOISE:
            config = FlashVidConfig(retention_ratio=case["retention"], alpha=case["alpha"],
                                    token_selection_method=case["selection"],
                                    temporal_threshold=case["temporal_threshold"],
                                    min_segment_num=case["min_segments"])
            with density_noise(noise):
                kept, indices = flashvid_compression(cases[name]["features"].clone(),
                                                     cases[name]["saliency"].clone(), config)
            results[name][noise] = indices.tolist()
            tokens[(name, noise)] = kept
    torch.save(tokens, work / "theirs" / "functions.pt")
    return results


def main(work: Path) -> None:
    import transformers
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    out_dir = work / "theirs"
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = convert_checkpoint(work / "ckpt", work / "ckpt457")
    ALL_ATTENTION_FUNCTIONS["flash_attention_2"] = varlen_attention  # patch (1)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    model.config.vision_config._attn_implementation = "flash_attention_2"  # their vision attention asserts it
    model.generation_config.temperature = model.generation_config.top_p = model.generation_config.top_k = None
    results = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
    cases = {path.stem.removeprefix("inputs_"): torch.load(path)
             for path in sorted((work / "ours").glob("inputs_*.pt"))}
    native = model.model.get_rope_index
    for case, inputs in cases.items():
        own, _ = native(inputs["input_ids"], None, inputs["video_grid_thw"], inputs.get("second_per_grid_ts"),
                        inputs["attention_mask"])
        results["cases"][case] = {"positions_equal": bool(torch.equal(own, inputs["position_ids"])), "runs": {}}
    model.model.get_rope_index = lambda *args, **kwargs: (ACTIVE["position_ids"], ACTIVE["rope_deltas"])  # patch (2)

    for case, inputs in cases.items():  # dense first: flashvid() replaces the classes' methods for good
        ACTIVE.update(position_ids=inputs["position_ids"], rope_deltas=inputs["rope_deltas"])
        model.model.rope_deltas = None
        ids, logits = generate(model, inputs)
        results["cases"][case]["runs"]["dense"] = {"answer_ids": ids, "first_logits": logits.tolist()}
        print(f"theirs: {case} dense: ids {ids}", flush=True)

    from flashvid import flashvid

    for case, inputs in cases.items():
        ACTIVE.update(position_ids=inputs["position_ids"], rope_deltas=inputs["rope_deltas"])
        video = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
        start, end = int(video[0]), int(video[-1]) + 1
        for name, setting in SETTINGS.items():
            kwargs = their_kwargs(setting)
            if hasattr(type(model), "generate_ori"):  # a second flashvid() would wrap its own generate (recursion)
                type(model).generate = type(model).generate_ori
            flashvid(model, **kwargs)
            runs = {}
            for noise in NOISE:
                model.model.rope_deltas = None
                seen, handles = record_positions(model, kwargs["pruning_layer"])
                try:
                    with density_noise(noise):
                        ids, logits = generate(model, inputs)
                finally:
                    for handle in handles:
                        handle.remove()
                kept = [[p for p in seen[key] if start <= p < end] if key in seen else None
                        for key in ("decoder", "layer")]
                runs[noise] = {"answer_ids": ids, "first_logits": logits.tolist(), "kept_before_llm": sorted(kept[0]),
                               "kept_inside_llm": None if kept[1] is None else sorted(kept[1]),
                               "duplicates_before_llm": len(kept[0]) - len(set(kept[0]))}
                print(f"theirs: {case} {name} ({noise}): kept {len(kept[0])} then {len(kept[1] or [])}, ids {ids}",
                      flush=True)
            results["cases"][case]["runs"][name] = runs
    results["functions"] = run_functions(work)
    (out_dir / "theirs.json").write_text(json.dumps(results))


ACTIVE: dict = {}  # the positions the patched get_rope_index returns for the case being run

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(Path(sys.argv[1]))
