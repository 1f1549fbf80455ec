"""The authors' side: their FrameFusion (thu-nics/FrameFusion, unmodified) on transformers 4.51.3.

Run in the authors' venv with PYTHONPATH=$AUTHORS_DIR/src (their tree, not pip-installed):
    python theirs.py WORK_DIR
Needs WORK_DIR/ckpt451 (convert.py), WORK_DIR/inputs/*.pt and WORK_DIR/ours_logits.pt (ours.py).
Both sides compute their own positions (no position ids are passed): this model's are transformers 4.51's, the
published rule; ours are framefusion's published positions on transformers 5.x.
1. dense check: our dense logits vs this dense model on every input, all positions; stops with exit code 3
   unless every max |diff| < DENSE_TOL. Then a greedy `generate` of NEW_TOKENS tokens (ids, every step's logits).
2. their apply_framefusion(model, cost, similarity_lower_bound, ratio_lower_bound) on a fresh model per
   regime: one prefill with observation-only hooks (token counts entering each decoder layer, its self_attn
   and its mlp, the KV-cache length per layer, whether the attention mask was None (their last-4-row
   importance is causal only then), and the surviving sequence positions after each reduction point, read from
   the keep masks their FrameFusion passes to its position-embedding handlers), then a greedy `generate`.
Writes WORK_DIR/theirs.json and WORK_DIR/theirs_logits.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from framefusion.interface import apply_framefusion  # the authors' package (PYTHONPATH=$AUTHORS_DIR/src)
from transformers import Qwen2VLForConditionalGeneration

DENSE_TOL = 1e-5
FEED = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")
NEW_TOKENS = 6  # as ours.py


def load(ckpt: Path, attn: str = "sdpa"):
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(ckpt), torch_dtype=torch.float32,
                                                            attn_implementation=attn)
    return model.eval()


def feed(saved):
    """The saved tensors (no position ids: the model computes its own, transformers 4.51's rule)."""
    return {k: saved[k] for k in FEED}


def generated(model, saved) -> tuple[list[int], torch.Tensor]:
    """(greedy ids, the logits of every generated step [NEW_TOKENS, vocab])."""
    inputs = feed(saved)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist(), torch.stack([s[0] for s in out.logits])


def observe(model):
    """Observation-only hooks; returns (record, handles)."""
    rec = {"layer_in": [], "attn_in": [], "mlp_in": [], "attn_mask_is_none": [], "points": [],
           "alive_after_point": []}
    handles = []

    def length(args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        return int(h.shape[1])

    for layer in model.model.layers:
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, k: rec["layer_in"].append(length(a, k)), with_kwargs=True))

        def attn_pre(m, a, k):
            rec["attn_in"].append(length(a, k))
            rec["attn_mask_is_none"].append(k.get("attention_mask") is None)
        handles.append(layer.self_attn.register_forward_pre_hook(attn_pre, with_kwargs=True))
        handles.append(layer.mlp.register_forward_pre_hook(
            lambda m, a, k: rec["mlp_in"].append(length(a, k)), with_kwargs=True))

    ff = model.framefusion
    state = {"alive": None}

    def ff_pre(m, args):
        if state["alive"] is None:
            state["alive"] = torch.arange(args[0].shape[1])
        if len(args) > 3 and args[3] is not None:  # the [1, H, 4, S] weights their prune step ranks by
            w = args[3]
            rows, keys = w.shape[-2], w.shape[-1]
            future = torch.arange(keys)[None, :] > torch.arange(keys - rows, keys)[:, None]  # [rows, S]
            # largest share of one (head, row) softmax that lands on keys after that row's own position
            rec["prune_weights_future_mass"] = float((w * future.to(w.dtype)).sum(-1).max())
            rec["prune_importance"] = torch.mean(w, dim=(1, 2))[0].tolist()
        state["before"] = (ff.finish_merging, ff.finish_pruning, len(ff.sparsity_list), int(args[0].shape[1]))

    def ff_post(m, args, out):
        fm, fp, ns, n_in = state["before"]
        n_out = int(out[0].shape[1])
        kind = None
        if n_in > 1 and fm and not fp:
            kind = "prune"
        elif n_in > 1 and not fm:
            kind = "merge"
        rec["points"].append({
            "point": len(rec["points"]), "kind": kind, "tokens_in": n_in, "tokens_out": n_out,
            "removed": n_in - n_out, "has_attn_weights": len(args) > 3 and args[3] is not None,
            "sparsity_list": [float(x) for x in ff.sparsity_list],
            "capped": kind == "merge" and len(ff.sparsity_list) == ns,
        })
        rec["alive_after_point"].append(state["alive"].tolist())

    handles.append(ff.register_forward_pre_hook(ff_pre))
    handles.append(ff.register_forward_hook(ff_post))

    # Observe the keep masks: wrap the two position-embedding handlers on this instance (they only
    # slice cos/sin; the wrapper calls the original and records which rows survived).
    orig_merge = ff.position_embedding_handler_at_merging
    orig_prune = ff.position_embedding_handler_at_pruning

    def at_merging(pe, token_mask):
        state["alive"] = state["alive"][token_mask[0].cpu()]
        return orig_merge(pe, token_mask)

    def at_pruning(pe, keep_indexs):
        state["alive"] = state["alive"][keep_indexs.cpu()]
        return orig_prune(pe, keep_indexs)

    ff.position_embedding_handler_at_merging = at_merging
    ff.position_embedding_handler_at_pruning = at_pruning
    return rec, handles


def kv_lengths(cache):
    if cache is None:
        return []
    if hasattr(cache, "key_cache"):
        return [int(k.shape[-2]) for k in cache.key_cache]
    return [int(layer.keys.shape[-2]) for layer in cache.layers]


def run_framefusion(work: Path, saved, attn: str) -> dict:
    """Their apply_framefusion on a fresh model, one observed prefill."""
    p = saved["params"]
    model = load(work / "ckpt451", attn)
    try:
        apply_framefusion(model, p["cost"], p["similarity_lower_bound"], p["ratio_lower_bound"])
        rec, handles = observe(model)
        try:
            with torch.no_grad():
                out = model(**feed(saved), use_cache=True)
        finally:
            for h in handles:
                h.remove()
    except Exception as err:  # e.g. their "The cost is too small"
        return {"error": f"{type(err).__name__}: {err}"}
    fresh = load(work / "ckpt451", attn)  # a fresh model for generate: their state lives on the model
    apply_framefusion(fresh, p["cost"], p["similarity_lower_bound"], p["ratio_lower_bound"])
    ids, steps = generated(fresh, saved)
    vision = set(torch.nonzero(saved["input_ids"][0] == model.config.video_token_id).flatten().tolist())
    alive = rec["alive_after_point"]  # alive after point k (k = 0..28)
    return {
        "layer_in": rec["layer_in"], "attn_in": rec["attn_in"], "mlp_in": rec["mlp_in"],
        "kv_cache_lengths": kv_lengths(out.past_key_values),
        "attn_mask_is_none": rec["attn_mask_is_none"],
        "points": [pt for pt in rec["points"] if pt["kind"] is not None],
        "num_framefusion_calls": len(rec["points"]),
        "kv_vision_positions": [sorted(x for x in alive[l] if x in vision) for l in range(28)],
        "ffn_vision_positions": [sorted(x for x in alive[l + 1] if x in vision) for l in range(28)],
        "logits_rows": int(out.logits.shape[1]),
        "sparsity_list": [float(x) for x in model.framefusion.sparsity_list],
        "prune_weights_future_mass": rec.get("prune_weights_future_mass"),
        "prune_importance": rec.get("prune_importance"),
        "vision_attn_class": type(model.visual.blocks[0].attn).__name__,
        "logits": out.logits[0, -1].clone(),
        "generated": ids,
        "steps": steps,
    }


def main(work: Path) -> int:
    ours_logits = torch.load(work / "ours_logits.pt")
    regimes = sorted(p.stem for p in (work / "inputs").glob("*.pt"))
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "dense": {}, "regimes": {}}
    logits_out = {}

    model = load(work / "ckpt451")
    assert model.config.num_hidden_layers == 28
    ok = True
    for name in regimes:
        saved = torch.load(work / "inputs" / f"{name}.pt")
        with torch.no_grad():
            dense = model(**feed(saved), use_cache=True).logits[0]
        diff = float((dense - ours_logits[f"{name}|dense"]).abs().max())
        ids, steps = generated(model, saved)
        result["dense"][name] = {"max_abs_diff_all_positions": diff, "last_row_max_abs": float(dense[-1].abs().max()),
                                 "generated": ids}
        logits_out[f"{name}|dense"] = dense[-1].clone()
        logits_out[f"{name}|dense_steps"] = steps
        ok &= diff < DENSE_TOL
        print(f"theirs: dense {name}: max |ours - theirs| = {diff:.3e}, generated {ids}", flush=True)
    if not ok:
        (work / "theirs.json").write_text(json.dumps(result, indent=1))
        print(f"theirs: dense models disagree beyond {DENSE_TOL}; not comparing FrameFusion", flush=True)
        return 3

    eager = load(work / "ckpt451", "eager")
    for name in regimes:
        saved = torch.load(work / "inputs" / f"{name}.pt")
        with torch.no_grad():
            dense = eager(**feed(saved), use_cache=True).logits[0]
        diff = float((dense - ours_logits[f"{name}|dense_eager"]).abs().max())
        result["dense"][name]["eager_max_abs_diff_all_positions"] = diff
        print(f"theirs: dense eager {name}: max |ours - theirs| = {diff:.3e}", flush=True)

    for name in regimes:
        saved = torch.load(work / "inputs" / f"{name}.pt")
        entry = {"params": saved["params"]}
        for attn in ("sdpa", "eager"):
            run = run_framefusion(work, saved, attn)
            if "logits" in run:
                logits_out[f"{name}|ff" + ("" if attn == "sdpa" else "_eager")] = run.pop("logits")
                logits_out[f"{name}|ff_steps" + ("" if attn == "sdpa" else "_eager")] = run.pop("steps")
            if attn == "sdpa":
                entry.update(run)
            else:
                entry["eager"] = run
            print(f"theirs: {name} [{attn}]: " + (run.get("error") or f"attn_in {run['attn_in'][:6]}..."), flush=True)
        result["regimes"][name] = entry

    torch.save(logits_out, work / "theirs_logits.pt")
    (work / "theirs.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
