"""The comparison methods inside real (tiny, random) Hugging Face video LLMs, some against slow references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_random_clip
from reference_framefusion import ReferenceResult, capture_dense_inputs, project, reference_greedy_decode

from framefusion import last_stats, reduced, remove_framefusion
from framefusion.adapters import adapter_for
from framefusion.api import reduction_description
from framefusion.core.compat import output_cache
from framefusion.methods import apply_method, select_frames
from framefusion.tiny import FAMILIES
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in the video?"
REDUCING = ["fastv", "streamingllm", "vidcom2", "evs", "uniform", "visionzip", "fastvid", "holitom",
            "dycoke", "flashvid"]
# rank by vision-encoder attention where the family's tower is read
SALIENCY_METHODS = {"visionzip", "fastvid", "holitom", "flashvid"}
ATTENTION_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "llava_onevision"}


def model_parts(model):
    adapter = adapter_for(model)
    return adapter, adapter.decoder_layers(model), adapter.text_model(model)


def prompt_layout(model, inputs):
    """The engine's view of the prompt's video tokens (the last prompt token is never reducible)."""
    adapter = adapter_for(model)
    module = adapter.multimodal_module(model)
    layout = adapter.token_layout(module, inputs["input_ids"], adapter.video_inputs(dict(inputs)))
    return layout.without_positions(torch.tensor([layout.seq_len - 1]))


def run_method(model, name, budget, inputs, new_tokens=0):
    """(prefill logits [n_alive, V], stats, generate output or None) with method `name` installed."""
    apply_method(model, name, budget)
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0]
            stats = last_stats(model)
            out = None
            if new_tokens:
                out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True)
        return logits, stats, out
    finally:
        remove_framefusion(model)


# ---- end to end: generate, statistics, matched budget -------------------------------------------------------
@pytest.mark.parametrize("budget", [0.3, 0.5])
@pytest.mark.parametrize("name", REDUCING)
def test_method_generates_and_meets_the_budget(name, budget, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    with reduced(model, name, budget) as run:  # select_frames after install: uniform remembers its pick on the model
        inputs = prepare_inputs(processor, [run.select_frames(make_random_clip(16, static_fraction=0.5))], QUESTION)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        stats = run.stats
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert stats.method == name
    # 16 frames are 8 Qwen-VL grid frames: uniform can only keep whole grid frames (2/8 for 0.3)
    assert abs(stats.kept_ratio - budget) <= 0.05 + 1e-9, stats.to_dict()
    assert len(stats.vision_tokens_per_layer()) == 12
    assert stats.to_dict()["kept_ratio"] == stats.kept_ratio
    if name not in ("dycoke", "streamingllm"):  # those two cut the cache after, or only the attention in, prefill
        assert stats.prefill_ratio == stats.kept_ratio


HYBRID = ("qwen3_5", "minicpmv4_6", "minicpmv4_7")  # linear attention in three of every four layers


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_runs_on_every_family(family, tiny_model_factory):
    hybrid = family in HYBRID  # 16 layers: the first attention layer (3) leaves room for the budget
    model, processor = tiny_model_factory(family, num_layers=16) if hybrid else tiny_model_factory(family)
    clip = make_random_clip(8, static_fraction=0.5)
    for name in [n for n in REDUCING if not (hybrid and n == "streamingllm")]:  # dense, framefusion: test_engine
        params = {"saliency": "norm"} if name in SALIENCY_METHODS and family not in ATTENTION_FAMILIES else {}
        apply_method(model, name, 0.5, **params)  # before select_frames: uniform remembers its pick on the model
        try:
            inputs = prepare_inputs(processor, [select_frames(name, clip, 0.5, model)], QUESTION)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            stats = last_stats(model)
        finally:
            remove_framefusion(model)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 2, name
        assert stats.method == name
        assert abs(stats.kept_ratio - 0.5) <= 0.05 + 1e-9, (family, name, stats.to_dict())
        if name == "fastv":  # four layers: K lowered from 2 to 0 so the budget is reachable; hybrids: the
            assert [step.point for step in stats.steps] == [4 if hybrid else 1]  # first attention layer, 3


@pytest.mark.parametrize("family", HYBRID)
def test_streamingllm_is_refused_on_hybrid_decoders(family, tiny_model_factory):
    model, _ = tiny_model_factory(family, num_layers=16)
    with pytest.raises(ValueError, match="streamingllm is not defined.*linear-attention layers"):
        apply_method(model, "streamingllm", 0.3)
    assert reduction_description(model) is None  # nothing installed: the model is still dense
    assert not any("forward" in layer.__dict__ for layer in model_parts(model)[1])


def test_budget_one_is_the_dense_model(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    clip = make_random_clip(8, static_fraction=0.5)
    inputs = prepare_inputs(processor, [clip], QUESTION)
    with torch.no_grad():
        dense = model(**inputs).logits[0]
    for name in REDUCING:
        assert select_frames(name, clip, 1.0, model=model).frames.tobytes() == clip.frames.tobytes()
        logits, stats, _ = run_method(model, name, 1.0, inputs)
        torch.testing.assert_close(logits, dense, atol=1e-5, rtol=1e-5, msg=name)
        assert stats.kept_ratio == 1.0, name


def test_pre_llm_methods_reduce_each_video_of_a_prompt(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=4)
    clips = [make_random_clip(8, static_fraction=0.5, seed=1), make_random_clip(8, static_fraction=0.25, seed=2)]
    inputs = prepare_inputs(processor, clips, "Compare the two videos.")
    for name in ("vidcom2", "evs"):
        _, stats, _ = run_method(model, name, 0.25, inputs)
        video = stats.token_grid[:, 0]
        kept = stats.removed_at < 0
        assert [int(kept[video == v].sum()) for v in (0, 1)] == [16, 16], name  # 64 tokens each
        if name == "evs":
            first_frame = stats.token_grid[:, 1] == 0
            assert bool(kept[first_frame].all())


def test_method_parameters_are_routed(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    from framefusion.api import reduction_description

    try:
        apply_method(model, "fastv", 0.3, similarity_lower_bound=0.5, ratio_lower_bound=0.1, layer=4)
        assert reduction_description(model) == "FastV(budget=0.3, layer=4)"
        with torch.no_grad():
            model(**inputs)
        assert last_stats(model).steps[0].point == 5
        apply_method(model, "framefusion", 0.3, similarity_lower_bound=0.5, layer=4)
        assert "similarity_lower_bound=0.5" in reduction_description(model)
        with pytest.raises(ValueError, match="budget"):
            apply_method(model, "evs", 0.0)
    finally:
        remove_framefusion(model)


def test_streamingllm_refuses_flash_attention(tiny_model_factory):
    model, _ = tiny_model_factory("qwen2_vl")
    text_config = adapter_for(model).text_model(model).config
    saved = text_config._attn_implementation
    text_config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="sdpa or eager"):
            apply_method(model, "streamingllm", 0.3)
    finally:
        text_config._attn_implementation = saved
        remove_framefusion(model)


# ---- uniform: kept_ratio measured against the full clip ------------------------------------------------------
@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
@pytest.mark.parametrize("budget", [0.3, 0.5])
def test_uniform_counts_against_the_full_clips_video_tokens(family, budget, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    clip = make_random_clip(16)
    full = prompt_layout(model, prepare_inputs(processor, [clip], QUESTION))
    with reduced(model, "uniform", budget) as run:
        inputs = prepare_inputs(processor, [run.select_frames(clip)], QUESTION)
        with torch.no_grad():
            model(**inputs)
        stats = run.stats
    assert stats.full_vision_tokens == full.num_vision_tokens  # what the processor makes of the full clip
    assert stats.kept_ratio == prompt_layout(model, inputs).num_vision_tokens / full.num_vision_tokens
    assert abs(stats.kept_ratio - budget) <= 0.05 + 1e-9


# ---- slow references: FastV, EVS and StreamingLLM written out with loops --------------------------------------
_MASKS: dict = {}  # the last mask built by slow_attend (layers with the same alive tokens share it)


def slow_attend(attn, q, k, v, query_positions, key_positions, allowed):
    """Eager attention where query at position pi may see key at pj iff allowed(pi, pj); loops build the mask."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * attn.scaling
    key = (allowed, tuple(query_positions), tuple(key_positions))
    if key not in _MASKS:
        mask = torch.zeros(len(query_positions), len(key_positions), dtype=torch.bool)
        for a, pi in enumerate(query_positions):
            for b, pj in enumerate(key_positions):
                mask[a, b] = allowed(pi, pj)
        _MASKS.clear()
        _MASKS[key] = mask
    mask = _MASKS[key]
    probs = torch.softmax(scores.masked_fill(~mask[None], float("-inf")), dim=-1)
    out = torch.einsum("hqk,khd->qhd", probs.to(v.dtype), v).reshape(len(query_positions), -1)
    return attn.o_proj(out), probs[:, -1, :].mean(dim=0)


def slow_prefill(model, inputs, layout, at_embeddings=None, after_layer=None, allowed=None, cache_positions=None):
    """One prefill with explicit lists; at_embeddings(rows) and after_layer(l, alive, probs) give removed positions."""
    _, layers, text = model_parts(model)
    captured = capture_dense_inputs(model, inputs, layers, text)
    hidden = captured["hidden"][0]
    cos_all, sin_all = (t[0] for t in captured["cos_sin"])
    alive = list(range(hidden.shape[0]))
    rows = {p: hidden[p] for p in alive}
    vision = set(layout.positions.tolist())
    allowed = allowed or (lambda pi, pj: pj <= pi)
    if at_embeddings is not None:
        gone = at_embeddings(rows)
        alive = [p for p in alive if p not in gone]
    kv_vision, caches = [], []
    with torch.no_grad():
        for index, layer in enumerate(layers):
            h = torch.stack([rows[p] for p in alive])
            kv_vision.append([p for p in alive if p in vision])
            q, k, v, _gate = project(layer.self_attn, layer.input_layernorm(h), cos_all[alive], sin_all[alive])
            caches.append((k, v))
            out, probs = slow_attend(layer.self_attn, q, k, v, alive, alive, allowed)
            h = h + out
            gone = after_layer(index, alive, probs) if after_layer is not None else set()
            keep_rows = [i for i, p in enumerate(alive) if p not in gone]
            alive = [alive[i] for i in keep_rows]
            h = h[keep_rows]
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            rows = {p: h[i] for i, p in enumerate(alive)}
        logits = model.lm_head(text.norm(torch.stack([rows[p] for p in alive])))
    if cache_positions is not None:
        caches = [(k[cache_positions], v[cache_positions]) for k, v in caches]
    return ReferenceResult(kv_vision, alive, logits, [], caches)


def slow_evs(layout, budget):
    """Removed positions by EVS, token by token: first frame kept, then 1 - cos with the previous frame."""
    info = list(zip(layout.positions.tolist(), layout.video.tolist(), layout.frame.tolist(), layout.patch.tolist()))
    where = {(video, frame, patch): pos for pos, video, frame, patch in info}

    def removed(rows):
        gone = set()
        for video, grid in enumerate(layout.grids):
            scored = []
            for pos, v, frame, patch in info:
                if v != video:
                    continue
                if frame == 0:
                    score = math.inf
                else:
                    a, b = rows[pos].double(), rows[where[(v, frame - 1, patch)]].double()
                    score = 1.0 - float(a @ b / (a.norm() * b.norm()))
                scored.append((-score, pos))
            keep = max(grid.tokens_per_frame, round(budget * len(scored)))
            gone |= {pos for _, pos in sorted(scored)[keep:]}
        return gone

    return removed


def slow_fastv(layout, budget, num_layers):
    """Removed positions by FastV after layer 2: the lowest last-query attention, count from the mean budget."""
    vision = layout.positions.tolist()

    def removed(index, alive, probs):
        if index != 2:
            return set()
        keep = round(len(vision) * (num_layers * budget - 3) / (num_layers - 3))
        ranked = sorted(vision, key=lambda pos: (-float(probs[alive.index(pos)]), pos))
        return set(ranked[keep:])

    return removed


def greedy_matches_reference(model, inputs, reference, out, new_tokens):
    """Compare generate's tokens and logits with greedy decoding on the reference's caches."""
    _, layers, text = model_parts(model)
    first = int(reference.logits[-1].argmax())
    probe = dict(inputs)
    extra = torch.tensor([[first] * new_tokens])
    probe["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    probe["attention_mask"] = torch.ones_like(probe["input_ids"])
    if "mm_token_type_ids" in inputs:
        probe["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    cos_sin = capture_dense_inputs(model, probe, layers, text)["cos_sin"]  # dense positions past the prompt
    tokens, logits = reference_greedy_decode(reference, first, new_tokens - 1, cos_sin, layers, text.embed_tokens,
                                             text.norm, model.lm_head, inputs["input_ids"].shape[1])
    assert out.sequences[0, inputs["input_ids"].shape[1]:].tolist() == tokens
    for step, expected in enumerate(logits, start=1):
        torch.testing.assert_close(out.logits[step][0], expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["fastv", "evs"])
def test_method_matches_slow_reference_in_prefill_and_decode(name, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    layout, budget = prompt_layout(model, inputs), 0.3
    if name == "fastv":
        reference = slow_prefill(model, inputs, layout, after_layer=slow_fastv(layout, budget, 12))
    else:
        reference = slow_prefill(model, inputs, layout, at_embeddings=slow_evs(layout, budget))
    logits, stats, out = run_method(model, name, budget, inputs, new_tokens=4)
    kv = [stats.vision_positions[stats.alive_after(layer)].tolist() for layer in range(12)]
    assert kv == reference.kv_vision
    torch.testing.assert_close(logits, reference.logits, atol=2e-5, rtol=1e-4)
    greedy_matches_reference(model, inputs, reference, out, new_tokens=4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_streamingllm_matches_slow_reference(attention, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8, attn_implementation=attention)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    layout, budget = prompt_layout(model, inputs), 0.3
    n, vision = layout.seq_len, set(layout.positions.tolist())
    needed, seen, start = round(budget * len(vision)) - sum(p < 8 for p in vision), 0, 8
    for pos in range(n - 1, 7, -1):  # walk back from the end until one video token too many
        if pos in vision:
            if seen == needed:
                start = pos + 1
                break
            seen += 1
    window = n - start
    span = [p for p in range(n) if p < 8 or p >= n - window]
    reference = slow_prefill(model, inputs, layout, allowed=lambda pi, pj: pj <= pi and (pj < 8 or pi - pj < window),
                             cache_positions=span)
    logits, stats, out = run_method(model, "streamingllm", budget, inputs, new_tokens=4)
    assert stats.window == window and stats.tokens_per_layer() == [len(span)] * 8
    assert stats.kept_ratio == len(vision & set(span)) / len(vision)
    torch.testing.assert_close(logits, reference.logits, atol=2e-5, rtol=1e-4)
    apply_method(model, "streamingllm", budget)
    try:
        with torch.no_grad():
            cache = output_cache(model(**inputs, use_cache=True))
    finally:
        remove_framefusion(model)
    assert cache.get_seq_length() == n  # decode positions continue the dense prompt's
    for layer, (keys, _) in zip(cache.layers, reference.caches):
        torch.testing.assert_close(layer.keys[0].transpose(0, 1), keys, atol=2e-5, rtol=1e-4)
    greedy_matches_reference(model, inputs, reference, out, new_tokens=4)


# ---- through the comparison runner --------------------------------------------------------------------------
def test_compare_runs_every_method_at_a_matched_budget(tiny_model_factory):
    import framefusion.pipeline.compare as compare
    from framefusion.pipeline.loading import LoadedModel

    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    loaded = LoadedModel(model, processor, "tiny-qwen2_vl", torch.device("cpu"), torch.float32)
    methods = ["dense", "framefusion", *REDUCING]
    result = compare.compare(loaded, make_random_clip(16, static_fraction=0.5), QUESTION, methods, budget=0.5,
                             max_new_tokens=2, warmup=False)
    assert [r.method for r in result.results] == methods
    for r in result.results:
        if r.method == "dense":
            assert r.kept_ratio == 1.0 and r.stats is None
            continue
        assert r.stats.method == r.method and r.kept_ratio == r.stats.kept_ratio
        assert abs(r.kept_ratio - 0.5) <= 0.05, (r.method, r.kept_ratio)
    assert set(result.agreement) == set(methods)
