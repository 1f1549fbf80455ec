"""Our side: build the 28-layer tiny Qwen2-VL, prepare the regime inputs, run dense and FrameFusion.

Run with this repository's .venv python (transformers 5.x, our `framefusion`, public API only):
    python ours.py WORK_DIR
Writes WORK_DIR/ckpt (if missing), WORK_DIR/inputs/<regime>.pt, WORK_DIR/ours.json, WORK_DIR/ours_logits.pt.

Every run goes through `framefusion.reduced`, dense included: "dense" is the published model, whose M-RoPE
positions (the text after a video continues at the video's largest position + 1) are those of transformers 4.x,
the authors' environment. Nothing passes position ids to either side: each computes its own. Each run is one
observed prefill (token counts, kept positions, logits) and a greedy `generate` of NEW_TOKENS tokens (ids and
the logits of every step).
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the regime clips, exactly as the tests build them
from conftest import make_random_clip  # noqa: E402
from test_engine import QUESTION, noisy_clip  # noqa: E402

import framefusion  # noqa: E402
from framefusion import apply_framefusion, reduced  # noqa: E402
from framefusion.tiny import model_class, save_tiny_checkpoint  # noqa: E402
from framefusion.video.prompting import prepare_inputs  # noqa: E402

# name: (clip, cost, similarity_lower_bound, ratio_lower_bound)
REGIMES = {
    "a_oneshot_topk": (lambda: noisy_clip(8, noise=(2, 30)), 0.3, 0.6, 0.1),
    "b_cascade": (lambda: noisy_clip(16, noise=(0, 120)), 0.5, 0.7, 0.02),
    "c_merge_prune": (lambda: make_random_clip(8, static_fraction=0.5), 0.3, 0.6, 0.1),
    "c16_merge_prune": (lambda: make_random_clip(16, static_fraction=0.5), 0.3, 0.6, 0.1),
    "d_prune_only": (lambda: make_random_clip(8), 0.3, 2.0, 0.1),
    "e_budget_0.5": (lambda: make_random_clip(8, static_fraction=0.5), 0.5, 0.6, 0.1),
    # extras, beyond the brief: exact similarity ties (identical frames) decided by the capped top-k, and a
    # budget below what one layer-0 pass already spends (the authors raise "The cost is too small")
    "x_static_ties": (lambda: make_random_clip(8, static=True), 0.3, 0.6, 0.1),
    "x_tight_budget": (lambda: make_random_clip(8), 0.02, 2.0, 0.1),
}
SAVED_KEYS = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")
NEW_TOKENS = 6  # greedy tokens generated per run


def output_cache(out):
    """The cache of a model output (transformers 5.24 names it `cache`; earlier 5.x `past_key_values`)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else getattr(out, "past_key_values", None)


def layer_kv_lengths(cache) -> list[int]:
    """Per-layer key length actually stored in a transformers-5 DynamicCache."""
    if cache is None:
        return []
    if hasattr(cache, "layers"):
        return [int(layer.keys.shape[-2]) for layer in cache.layers]
    return [int(k.shape[-2]) for k in cache.key_cache]


def hook_lengths(model):
    """Forward pre-hooks on every decoder layer, its self_attn and its mlp recording the token count."""
    layers = model.model.language_model.layers
    rec = {"layer_in": [], "attn_in": [], "mlp_in": []}
    handles = []

    def length(args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        return int(h.shape[1])

    for layer in layers:
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, k: rec["layer_in"].append(length(a, k)), with_kwargs=True))
        handles.append(layer.self_attn.register_forward_pre_hook(
            lambda m, a, k: rec["attn_in"].append(length(a, k)), with_kwargs=True))
        handles.append(layer.mlp.register_forward_pre_hook(
            lambda m, a, k: rec["mlp_in"].append(length(a, k)), with_kwargs=True))
    return rec, handles


def generated(net, inputs) -> tuple[list[int], torch.Tensor]:
    """(greedy ids, the logits of every generated step [NEW_TOKENS, vocab]) with whatever is installed on net."""
    with torch.no_grad():
        out = net.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                           output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist(), torch.stack([s[0] for s in out.logits])


def main(work: Path) -> None:
    torch.manual_seed(0)
    ckpt = work / "ckpt"
    if not (ckpt / "model.safetensors").exists():
        save_tiny_checkpoint("qwen2_vl", ckpt, num_layers=28, seed=0)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(ckpt)
    model = model_class("qwen2_vl").from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").eval()
    eager = model_class("qwen2_vl").from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    num_layers = model.config.text_config.num_hidden_layers
    assert num_layers == 28, num_layers

    accepts_q = "importance_queries" in inspect.signature(apply_framefusion).parameters
    variants = [None, 1, 4] if accepts_q else [None]
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    import subprocess
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    results = {"framefusion_file": framefusion.__file__,
               "main_commit": git("rev-parse", "--short", "HEAD"), "main_dirty": bool(git("status", "--porcelain")), "accepts_importance_queries": accepts_q,
               "num_layers": num_layers, "regimes": {}}
    logits_out = {}

    for name, (make_clip, cost, sim, ratio) in REGIMES.items():
        inputs = prepare_inputs(processor, [make_clip()], QUESTION)
        saved = {k: inputs[k].clone() for k in SAVED_KEYS}
        saved["params"] = {"cost": cost, "similarity_lower_bound": sim, "ratio_lower_bound": ratio}
        torch.save(saved, work / "inputs" / f"{name}.pt")
        seq_len = int(inputs["input_ids"].shape[1])
        video_id = model.config.video_token_id
        vision_positions = torch.nonzero(inputs["input_ids"][0] == video_id).flatten().tolist()
        entry = {"params": saved["params"], "seq_len": seq_len, "num_vision": len(vision_positions),
                 "vision_start": vision_positions[0], "extra_input_keys": sorted(set(inputs) - set(SAVED_KEYS)),
                 "runs": {}, "generated": {}}
        for label, net in (("dense", model), ("dense_eager", eager)):
            with reduced(net, "dense"), torch.no_grad():
                out = net(**inputs, use_cache=True)
                entry["generated"][label], logits_out[(name, f"{label}_steps")] = generated(net, inputs)
            logits_out[(name, label)] = out.logits[0].clone()
            if label == "dense":
                entry["dense_kv"] = layer_kv_lengths(output_cache(out))

        for q, net in [(q, model) for q in variants] + [("eager", eager)]:
            kwargs = dict(similarity_lower_bound=sim, ratio_lower_bound=ratio)
            if accepts_q and q is not None:
                kwargs["importance_queries"] = 4 if q == "eager" else q
            key = "default" if q is None else (q if q == "eager" else f"q{q}")
            with reduced(net, "framefusion", cost, **kwargs) as scope:
                rec, handles = hook_lengths(net)
                try:
                    with torch.no_grad():
                        out = net(**inputs, use_cache=True)
                    stats = scope.stats
                finally:
                    for h in handles:
                        h.remove()
                ids, steps = generated(net, inputs)
            vp = stats.vision_positions
            kv_vision_positions = [sorted(vp[stats.alive_after(l)].tolist()) for l in range(num_layers)]
            ffn_vision_positions = [sorted(vp[stats.alive_after(l + 1)].tolist()) for l in range(num_layers)]
            run = {
                "importance_queries_used": getattr(stats, "importance_queries", None),
                "tokens_per_layer": stats.tokens_per_layer(),
                "ffn_tokens_per_layer": stats.ffn_tokens_per_layer(),
                "vision_tokens_per_layer": stats.vision_tokens_per_layer(),
                "kept_ratio": stats.kept_ratio,
                "steps": [dict(s.__dict__) for s in stats.steps],
                "kv_cache_lengths": layer_kv_lengths(output_cache(out)),
                "hook_layer_in": rec["layer_in"], "hook_attn_in": rec["attn_in"], "hook_mlp_in": rec["mlp_in"],
                "kv_vision_positions": kv_vision_positions,
                "ffn_vision_positions": ffn_vision_positions,
                "logits_rows": int(out.logits.shape[1]),
                "generated": ids,
            }
            logits_out[(name, key)] = out.logits[0, -1].clone()
            logits_out[(name, f"{key}_steps")] = steps
            entry["runs"][key] = run
        results["regimes"][name] = entry
        print(f"ours: {name}: seq {seq_len}, vision {len(vision_positions)}, runs {list(entry['runs'])}", flush=True)

    torch.save({f"{k[0]}|{k[1]}": v for k, v in logits_out.items()}, work / "ours_logits.pt")
    (work / "ours.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
