"""DyCoke: TTM against a loop reference, the budget plan, and the KV eviction inside tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import make_random_clip

from framefusion import last_stats, remove_framefusion
from framefusion.adapters import adapter_for
from framefusion.core.compat import cache_argument, output_cache
from framefusion.methods import apply_method
from framefusion.methods.dycoke import dycoke_plan, ttm_keep, ttm_references, ttm_share
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening?"


def reference_ttm(features, keep_per_frame):
    """Windows of 4 frames: w0 whole, w1 and w2 keep their n least similar to w0, w3 its n least similar to w2."""
    frames, patches, _ = features.shape
    keep = torch.zeros(frames, patches, dtype=torch.bool)
    for f in range(frames):
        start = f - f % 4
        reference = {0: None, 1: start, 2: start, 3: start + 2}[f % 4]
        if reference is None:
            keep[f] = True
            continue
        scored = []
        for p in range(patches):
            a, b = features[f, p].double(), features[reference, p].double()
            scored.append((float(a @ b / (a.norm() * b.norm())), p))
        for _, p in sorted(scored)[:keep_per_frame]:
            keep[f, p] = True
    return keep.flatten()


@pytest.mark.parametrize("frames", [1, 3, 4, 7, 9])
@pytest.mark.parametrize("keep_per_frame", [1, 3, 9])
def test_ttm_equals_the_loop_reference(frames, keep_per_frame):
    torch.manual_seed(frames)
    features = torch.randn(frames, 9, 6)
    assert torch.equal(ttm_keep(features, keep_per_frame), reference_ttm(features, keep_per_frame))


def test_ttm_windows_and_share():
    assert ttm_references(9) == [None, 0, 0, 2, None, 4, 4, 6, None]
    assert ttm_share(8, 3, 10) == pytest.approx((2 * 10 + 6 * 3) / 80)


@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3, 0.6])
@pytest.mark.parametrize("layers", [8, 28])
def test_the_plan_lands_the_layer_mean_on_the_budget(budget, layers):
    frames, patches = 16, 100
    plan = dycoke_plan(frames, patches, layers, budget)
    share = ttm_share(frames, plan.keep_per_frame, patches)
    if plan.kv_point is None:
        assert share == pytest.approx(budget, abs=0.01)  # TTM alone, its count set from the budget
    else:
        mean = (plan.kv_point * share + (layers - plan.kv_point) * share * plan.kv_keep_share) / layers
        assert mean == pytest.approx(budget, abs=1e-9) and plan.kv_point <= 3


@pytest.mark.parametrize("family, layers", [("qwen2_vl", 8), ("llava_onevision", 8), ("qwen3_5", 16)])
def test_eviction_leaves_the_prefill_alone_and_shrinks_the_later_caches(family, layers, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=layers)
    inputs = prepare_inputs(processor, [make_random_clip(16, static_fraction=0.5)], QUESTION)
    runs = {}
    for budget in (0.25, 0.6):  # 0.6: TTM alone (above TTM's share at K = 0.7, no KV pruning)
        apply_method(model, "dycoke", budget)
        try:
            with torch.no_grad():
                cache = output_cache(model(**inputs, use_cache=True))
                stats = last_stats(model)
                lengths = [getattr(layer, "keys", None) for layer in cache.layers]
                lengths = [None if keys is None else keys.shape[-2] for keys in lengths]
                dense_length = cache.get_seq_length()
                step = model(input_ids=torch.tensor([[7]]), **cache_argument(cache),
                             position_ids=torch.tensor([[inputs["input_ids"].shape[1]]])).logits[0, -1]
        finally:
            remove_framefusion(model)
        assert torch.isfinite(step).all()  # decoding continues on the evicted cache
        runs[budget] = (stats, lengths, dense_length)
    stats, lengths, dense_length = runs[0.25]
    assert abs(stats.kept_ratio - 0.25) <= 0.05 and stats.kv_point is not None
    linear = [adapter_for(model).is_linear(layer) for layer in adapter_for(model).decoder_layers(model)]
    expected = [None if is_linear else n for n, is_linear in zip(stats.tokens_per_layer(), linear)]
    assert lengths == expected and lengths[-1] < max(n for n in lengths if n is not None)  # evicted late layers
    assert dense_length == inputs["input_ids"].shape[1]  # positions continue the dense prompt's
    ttm_share = stats.vision_tokens_per_layer()[0] / stats.num_vision_tokens  # the prefill ran TTM's output
    assert stats.prefill_ratio == pytest.approx(ttm_share) and stats.prefill_ratio > stats.kept_ratio + 0.1
    ttm_only = runs[0.6][0]
    assert ttm_only.kv_point is None and abs(ttm_only.kept_ratio - 0.6) <= 0.05
    assert ttm_only.prefill_ratio == pytest.approx(ttm_only.kept_ratio)


def test_prefill_logits_are_those_of_ttm_alone(tiny_model_factory):
    """The KV pruning happens after prefill: the first token's logits are those of TTM's input."""
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8)
    inputs = prepare_inputs(processor, [make_random_clip(16, static_fraction=0.5)], QUESTION)
    apply_method(model, "dycoke", 0.25)
    try:
        with torch.no_grad():
            with_eviction = model(**inputs).logits[0, -1]
        engine = model.__dict__["_framefusion_engine"]
        original = engine.make_reducer

        def no_eviction(layout, stack, device):
            run = original(layout, stack, device)
            run.stages = run.stages[:1]  # TTM only, with the same per-frame count
            return run

        engine.make_reducer = no_eviction
        with torch.no_grad():
            ttm_only = model(**inputs).logits[0, -1]
    finally:
        remove_framefusion(model)
    torch.testing.assert_close(with_eviction, ttm_only)


def test_each_video_of_a_prompt_is_planned_on_its_own_grid(tiny_model_factory):
    """Two videos of different lengths: TTM keeps what each video's own plan says (the plans differ)."""
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    clips = [make_random_clip(4, seed=1), make_random_clip(16, seed=2)]  # 2 and 8 grid frames
    inputs = prepare_inputs(processor, clips, QUESTION)
    apply_method(model, "dycoke", 0.2)
    try:
        with torch.no_grad():
            model(**inputs)
        stats = last_stats(model)
    finally:
        remove_framefusion(model)
    grids = stats.grids
    plans = [dycoke_plan(g.frames, g.tokens_per_frame, 12, 0.2) for g in grids]
    assert plans[0].keep_per_frame != plans[1].keep_per_frame or plans[0].kv_keep_share != plans[1].kv_keep_share
    video = stats.token_grid[:, 0]
    for index, (grid, plan) in enumerate(zip(grids, plans)):
        ttm_removed = int(((stats.removed_at == 0) & (video == index)).sum())
        pruned_frames = sum(ref is not None for ref in ttm_references(grid.frames))
        assert ttm_removed == pruned_frames * (grid.tokens_per_frame - plan.keep_per_frame), index
        ttm_kept = grid.frames * grid.tokens_per_frame - ttm_removed
        evicted = int(((stats.removed_at == plan.kv_point) & (video == index)).sum())
        assert ttm_kept - evicted == max(round(ttm_kept * plan.kv_keep_share), 1), index


def test_videos_whose_plans_need_different_kv_layers_are_refused(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8)
    assert dycoke_plan(1, 16, 8, 0.3).kv_point != dycoke_plan(2, 16, 8, 0.3).kv_point
    inputs = prepare_inputs(processor, [make_random_clip(2, seed=1), make_random_clip(4, seed=2)], QUESTION)
    apply_method(model, "dycoke", 0.3)
    try:
        with pytest.raises(ValueError, match="sample the videos alike"), torch.no_grad():
            model(**inputs)
    finally:
        remove_framefusion(model)
