"""HoliTom: the tensor functions against the slow reference, the DP segmentation, the budget, and end to end."""

from __future__ import annotations

import pytest
import torch
from conftest import forward_reduced, generate_reduced, make_random_clip
from reference_holitom import dp_windows, gains, reference_holitom_video, reference_inner_merge

from framefusion import remove_framefusion
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import MERGED
from framefusion.methods.holitom import (
    HoliTomConfig,
    apply_holitom,
    holitom_budget,
    holitom_point,
    holitom_video,
    inner_selection,
    segment_frames,
    sequential_average,
    static_reach,
    window_gains,
)
from framefusion.tiny import build_tiny_model
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in the video?"


def video_with_static_patches(frames, patches, dim=8, seed=0, static_share=0.5, noise=0.05):
    """Random features [T, P, D] where a share of the patches repeat (plus noise) over random runs of frames."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, patches, dim, generator=g)
    for p in range(patches):
        if frames > 1 and torch.rand(1, generator=g).item() < static_share:
            u = int(torch.randint(0, frames - 1, (1,), generator=g))
            v = int(torch.randint(u + 1, frames, (1,), generator=g))
            x[u:v + 1, p] = x[u, p] + noise * torch.randn(v - u + 1, dim, generator=g)
    return x, torch.rand(frames, patches, generator=g)


def gains_from_similarity(sim, tau):
    return window_gains(static_reach(torch.tensor(sim, dtype=torch.float32), tau))


# ---- outer stage == reference ------------------------------------------------------------------------------
CASES = [(1, 9), (2, 4), (4, 9), (6, 16), (8, 12)]


@pytest.mark.parametrize("frames,patches", CASES)
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3, 0.6, 0.95])
@pytest.mark.parametrize("tau", [0.5, 0.8])
def test_outer_stage_matches_the_reference(frames, patches, budget, tau):
    for seed in range(3):
        x, saliency = video_with_static_patches(frames, patches, seed=seed + 10 * frames)
        config = HoliTomConfig(tau=tau)
        fast = holitom_video(x, budget, saliency, config)
        keep, features, merged_into = reference_holitom_video(x, budget, saliency, tau=tau)
        assert torch.equal(fast.keep, keep), (seed, fast.keep, keep)
        assert torch.equal(fast.merged_into, merged_into)
        assert torch.allclose(fast.features[keep].double(), features[keep], atol=1e-5)
        assert int(fast.keep.sum()) == max(1, round(budget * frames * patches))


@pytest.mark.parametrize("context_share,beta,knn", [(0.5, 0.6, 7), (1.0, 0.3, 2), (0.5, 1.0, 3)])
def test_outer_stage_with_context_tokens_matches_the_reference(context_share, beta, knn):
    for seed, (frames, patches) in enumerate(CASES):
        x, saliency = video_with_static_patches(frames, patches, seed=seed)
        config = HoliTomConfig(context_share=context_share, beta=beta, knn=knn)
        fast = holitom_video(x, 0.3, saliency, config)
        keep, features, merged_into = reference_holitom_video(x, 0.3, saliency, context_share=context_share,
                                                              beta=beta, knn=knn)
        assert torch.equal(fast.keep, keep) and torch.equal(fast.merged_into, merged_into)
        assert torch.allclose(fast.features[keep].double(), features[keep], atol=1e-5)


def test_static_window_collapses_to_the_mean_at_its_first_frame():
    frames, patches = 4, 4
    x = torch.randn(frames, patches, 8, generator=torch.Generator().manual_seed(1))
    x[:, 0] = x[0, 0] + 0.01 * torch.randn(frames, 8)  # patch 0 static over the whole video
    selection = holitom_video(x, 1.0, torch.rand(frames, patches), HoliTomConfig(tau=0.9))
    assert int(selection.keep.sum()) == frames * patches  # budget 1: the static patch is split back
    selection = holitom_video(x, 13 / 16, torch.rand(frames, patches), HoliTomConfig(tau=0.9))
    assert selection.keep.tolist()[::patches] == [True, False, False, False]
    assert torch.allclose(selection.features[0], x[:, 0].mean(dim=0))
    assert selection.merged_into[patches::patches].tolist() == [0, 0, 0]


def test_budget_is_exact_over_many_shapes():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        frames, patches = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g))
        budget = float(torch.rand(1, generator=g)) * 0.9 + 0.05
        x, saliency = video_with_static_patches(frames, patches, seed=seed, static_share=0.8)
        selection = holitom_video(x, budget, saliency, HoliTomConfig(tau=0.5))
        assert int(selection.keep.sum()) == max(1, round(budget * frames * patches))
        removed = ~selection.keep
        into = selection.merged_into
        assert (into[selection.keep] == -1).all()
        assert selection.keep[into[removed & (into >= 0)]].all()  # every merge lands on a kept token


# ---- temporal DP ---------------------------------------------------------------------------------------------
def test_dp_on_hand_made_similarities():
    hi, lo = 0.95, 0.1
    # 4 frames, 2 patches, all static: one window, 2 patches * 3 frames saved
    assert segment_frames(gains_from_similarity([[hi, hi]] * 3, 0.8), 1024) == ([(0, 3)], 6)
    # nothing static: single frames
    assert segment_frames(gains_from_similarity([[lo, lo]] * 3, 0.8), 1024) == ([(0, 0), (1, 1), (2, 2), (3, 3)], 0)
    # a cut between frames 1 and 2
    assert segment_frames(gains_from_similarity([[hi, hi], [lo, lo], [hi, hi]], 0.8), 1024) == ([(0, 1), (2, 3)], 4)
    # the window length limit
    assert segment_frames(gains_from_similarity([[hi, hi]] * 3, 0.8), 2) == ([(0, 1), (2, 3)], 4)
    # a tie (window [0, 2] saves 1 * 2 = 2, as [0, 1] saves 2 * 1): strict >, the earlier shorter choice stays
    assert segment_frames(gains_from_similarity([[hi, hi], [hi, lo]], 0.8), 1024) == ([(0, 1), (2, 2)], 2)
    # similarity exactly tau is not static
    assert segment_frames(gains_from_similarity([[0.8, 0.8]], 0.8), 1024) == ([(0, 0), (1, 1)], 0)
    # one frame
    assert segment_frames(window_gains(static_reach(torch.zeros(0, 3), 0.8)), 1024) == ([(0, 0)], 0)


def test_gains_and_dp_match_the_reference_on_random_patterns():
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        frames, patches = int(torch.randint(2, 10, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        sim = (torch.rand(frames - 1, patches, generator=g) < 0.7).float()  # 1: static step, 0: change
        gain = window_gains(static_reach(sim, 0.5))
        expected = gains(sim.tolist(), frames, patches, 0.5)
        assert gain.tolist() == expected
        for max_window in (2, 3, 1024):
            assert segment_frames(gain, max_window) == dp_windows(expected, frames, max_window)


# ---- inner merge ---------------------------------------------------------------------------------------------
def test_sequential_average_equals_the_loop():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(12, 5, generator=g, dtype=torch.float64)
    into = torch.tensor([-1, 0, -1, 2, 0, 0, 2, -1, 7, 0, -1, 2])
    expected = states.clone()
    for j in range(12):
        if into[j] >= 0:
            expected[into[j]] = (expected[into[j]] + states[j]) / 2
    assert torch.allclose(sequential_average(states, into).double(), expected, atol=1e-6)
    assert torch.equal(sequential_average(states, torch.full((12,), -1)).double(), states.float().double())


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_inner_selection_matches_the_reference(ratio):
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        n = 40
        hidden = torch.randn(n, 6, generator=g)
        importance = torch.rand(n, generator=g)
        importance[5] = importance[6]  # a tie: the earlier token first
        video = torch.tensor([0] * 25 + [1] * 15)
        fast = inner_selection(importance, hidden, video, torch.arange(n) + 3, ratio)
        keep, states, into = reference_inner_merge(importance, hidden, video, ratio)
        assert torch.equal(fast.keep, keep) and torch.equal(fast.merged_into, into)
        assert torch.allclose(fast.features[keep].double(), states[keep], atol=1e-5)
        assert int(keep[:25].sum()) == round(25 * (1 - ratio)) and int(keep[25:].sum()) == round(15 * (1 - ratio))


# ---- budget and parameters -------------------------------------------------------------------------------
def test_inner_layer_scales_with_depth():
    assert holitom_point(DecoderStack.attention_only(28)) == 18
    assert holitom_point(DecoderStack.attention_only(8)) == 5
    assert holitom_point(DecoderStack.attention_only(2)) == 1
    assert holitom_point(DecoderStack.attention_only(1)) is None
    assert holitom_point(DecoderStack.attention_only(8), inner_layer=3) == 3
    hybrid = DecoderStack((True, True, True, False) * 4)  # attention layers 3, 7, 11, 15
    assert round(16 * 18 / 28) == 10 and holitom_point(hybrid) == 12  # point 12 follows attention layer 11


@pytest.mark.parametrize("layers", [8, 16, 28, 36])
@pytest.mark.parametrize("budget", [0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0])
def test_outer_retention_and_inner_ratio_land_on_the_budget(layers, budget):
    point = holitom_point(DecoderStack.attention_only(layers))
    outer, ratio = holitom_budget(budget, layers, point, 0.5)
    assert 0 < outer <= 1 and 0 <= ratio <= 0.5
    assert abs(outer * (point + (layers - point) * (1 - ratio)) / layers - budget) < 1e-9
    unclipped = budget * layers / (point + (layers - point) * 0.5)
    assert (outer, ratio) == ((unclipped, 0.5) if unclipped <= 1 else (1.0, pytest.approx(ratio)))
    assert holitom_budget(budget, layers, None, 0.5) == (budget, 0.0)
    assert holitom_budget(budget, layers, point, 0.0) == (budget, 0.0)
    assert holitom_budget(0.3, 28, 18, 0.5) == pytest.approx((0.3 / (23 / 28), 0.5))


@pytest.mark.parametrize("field,value", [("tau", 1.5), ("tau", float("nan")), ("beta", -0.1), ("beta", True),
                                         ("context_share", 2.0), ("knn", 0), ("knn", 2.5), ("max_window", 0),
                                         ("inner_ratio", 1.0), ("inner_ratio", -0.5), ("inner_layer", 0),
                                         ("inner_layer", "3")])
def test_out_of_range_parameters_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        HoliTomConfig(**{field: value})


def test_apply_rejects_bad_arguments():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="budget"):
        apply_holitom(model, 0.0)
    with pytest.raises(ValueError, match="saliency"):
        apply_holitom(model, 0.3, saliency="random")
    with pytest.raises(ValueError, match="tau"):
        apply_holitom(model, 0.3, tau=2.0)
    with pytest.raises(TypeError):
        apply_holitom(model, 0.3, bogus=1)


# ---- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny_model(family, num_layers=8)
        return cache[family]

    return get


@pytest.mark.parametrize("family,saliency", [("qwen2_vl", "attention"), ("qwen3_vl", "attention"),
                                             ("llava_onevision", "attention"), ("internvl", "norm")])
@pytest.mark.parametrize("budget", [0.25, 0.3])
def test_generates_and_meets_the_budget(family, saliency, budget, tiny):
    model, processor = tiny(family)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    out, stats = generate_reduced(model, inputs, 2, "holitom", budget, saliency=saliency)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert stats.method == "holitom"
    assert abs(stats.kept_ratio - budget) <= 0.05, stats.to_dict()
    assert [s.point for s in stats.steps] == [0, 5]
    assert (stats.removed_by == MERGED).any()


def test_without_the_inner_step_the_outer_stage_keeps_the_budget(tiny):
    model, processor = tiny("qwen2_vl")
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    _, stats = forward_reduced(model, inputs, "holitom", 0.3, inner=False)
    assert [s.point for s in stats.steps] == [0]
    assert abs(stats.kept_ratio - 0.3) <= 0.5 / stats.num_vision_tokens + 1e-9


def test_attention_saliency_is_refused_where_the_vision_encoder_has_no_probe(tiny):
    model, _ = tiny("internvl")
    try:
        with pytest.raises(ValueError, match="norm"):
            apply_holitom(model, 0.3, saliency="attention")
    finally:
        remove_framefusion(model)
