"""FastVID: the tensor functions against a loop-by-loop reference, their edge cases, and the tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import forward_reduced, generate_reduced, make_random_clip
from reference_fastvid import reference_fastvid

from framefusion.methods.fastvid import (
    FastVIDConfig,
    anchor_frames,
    apply_fastvid,
    fastvid_video,
    fill_equally,
    frame_transitions,
    merge_into_context,
    segment_lengths,
    token_counts,
    top_per_frame,
)
from framefusion.methods.vidcom2 import frame_budgets
from framefusion.tiny import build_tiny_model
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in the video?"


def scene_video(frames, patches, dim=16, scenes=3, noise=0.35, seed=0):
    """Features [T, P, D] of `scenes` runs of similar frames (a base per scene plus noise), saliency [T, P]."""
    g = torch.Generator().manual_seed(seed)
    bases = torch.randn(scenes, patches, dim, generator=g)
    scene = torch.randint(0, scenes, (frames,), generator=g).sort().values
    features = bases[scene] + noise * torch.randn(frames, patches, dim, generator=g)
    return features, torch.rand(frames, patches, generator=g)


def counts_for(frames, patches, budget, lengths, config=FastVIDConfig()):
    kept = frame_budgets(torch.ones(frames), patches, round(budget * frames * patches))
    anchors = anchor_frames(lengths, config.anchor_interval)
    return token_counts(patches, kept, lengths, anchors, config.context_ratio), anchors


# ---- against the reference --------------------------------------------------------------------------------
CONFIGS = {"default": {}, "long_segments": {"min_segments": 2, "cut_threshold": 0.5},
           "one_segment": {"min_segments": 1, "cut_threshold": -1.0}, "every_frame": {"anchor_interval": 1},
           "no_floor": {"context_weight": 0.0, "context_ratio": 0.5}}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3, 0.6])
@pytest.mark.parametrize("frames,patches", [(1, 16), (5, 9), (12, 16), (9, 25)])
def test_matches_the_reference(frames, patches, budget, config):
    features, saliency = scene_video(frames, patches, seed=frames * 100 + patches)
    params = CONFIGS[config]
    selection = fastvid_video(features, budget, saliency, FastVIDConfig(**params))
    keep, merged, merged_into = reference_fastvid(features, budget, saliency, **params)
    assert selection.keep.tolist() == keep
    assert selection.merged_into.tolist() == merged_into
    torch.testing.assert_close(selection.features.double(), merged, atol=1e-5, rtol=1e-5)
    assert int(selection.keep.sum()) == max(round(budget * frames * patches), frames)


def test_the_reference_sees_multi_frame_segments_with_several_anchors():
    features, _ = scene_video(12, 16, seed=1216)
    lengths = segment_lengths(frame_transitions(features), 2, 0.5)
    assert max(lengths) > 4  # the long_segments cases above merge a segment into two or more anchors


@pytest.mark.parametrize("budget", [0.01, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("frames,patches", [(1, 49), (3, 4), (8, 49), (16, 16)])
def test_keeps_exactly_the_budget_and_one_token_a_frame(frames, patches, budget):
    features, saliency = scene_video(frames, patches, seed=7)
    selection = fastvid_video(features, budget, saliency)
    keep = selection.keep.view(frames, patches)
    assert int(keep.sum()) == min(max(round(budget * frames * patches), frames), frames * patches)
    assert bool((keep.sum(dim=1) >= 1).all())
    if selection.merged_into is not None:
        into = selection.merged_into
        assert bool((into[selection.keep] == -1).all())
        assert bool(selection.keep[into[into >= 0]].all())  # removed tokens join kept ones


def test_budget_one_is_the_unchanged_video():
    features, saliency = scene_video(6, 9)
    selection = fastvid_video(features, 1.0, saliency)
    assert bool(selection.keep.all()) and selection.features is None and selection.merged_into is None


# ---- DySeg --------------------------------------------------------------------------------------------------
def test_segments_cut_at_the_lowest_transitions_and_below_the_threshold():
    t = torch.tensor([0.99, 0.95, 0.97, 0.5, 0.98, 0.96])
    assert segment_lengths(t, 3, 0.9) == [2, 2, 3]  # cuts after frames 1 (lowest two: 1, 3) and 3
    assert segment_lengths(t, 1, 0.9) == [4, 3]  # only the threshold
    assert segment_lengths(t, 1, 0.975) == [2, 1, 1, 2, 1]  # 0.95, 0.97, 0.5, 0.96 < 0.975
    assert segment_lengths(torch.tensor([0.9, 0.9, 0.9]), 2, 0.0) == [1, 3]  # ties: the earlier transition


def test_segments_with_fewer_frames_than_segments():
    assert segment_lengths(torch.zeros(0), 8, 0.9) == [1]  # one frame
    assert segment_lengths(torch.ones(4), 8, 0.9) == [1] * 5  # F - 1 < c - 1: every transition is a cut


def test_transitions_are_cosines_of_frame_means():
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [2.0, 0.0]], [[3.0, 3.0], [1.0, 1.0]]])
    torch.testing.assert_close(frame_transitions(features), torch.tensor([2 ** -0.5, 1.0]))


def test_anchor_frames_count_back_from_the_segment_end():
    assert anchor_frames([5, 1, 4, 2], 4).tolist() == [True, False, False, False, True, True,
                                                       False, False, False, True, False, True]
    assert bool(anchor_frames([3, 2], 1).all())


# ---- budget split -------------------------------------------------------------------------------------------
def test_split_matches_the_authors_when_nothing_is_lost_to_floors():
    (salient, context), _ = counts_for(8, 196, 0.25, [4, 1, 3])  # 49 a frame: 30 salient + 19 context
    assert salient.tolist() == [30] * 8
    assert context.tolist() == [0, 0, 0, 76, 19, 0, 0, 57]


def test_split_hands_the_floor_losses_to_the_last_anchors():
    (salient, context), _ = counts_for(5, 196, 0.25, [5])  # the authors: 47 + 47 of 95 context tokens
    assert context.tolist() == [47, 0, 0, 0, 48] and salient.tolist() == [30] * 5


def test_split_moves_context_beyond_the_anchors_capacity_to_salient_tokens():
    (salient, context), anchors = counts_for(4, 10, 0.9, [4])  # 9 a frame: 6 + 3, the one anchor holds 4 only
    assert context.tolist() == [0, 0, 0, 4]
    assert salient.tolist() == [9, 9, 8, 6]
    assert int((salient + context).sum()) == 36


def test_split_at_tiny_budgets_keeps_one_salient_token_a_frame():
    (salient, context), _ = counts_for(6, 49, 0.001, [2, 4])
    assert salient.tolist() == [1] * 6 and context.tolist() == [0] * 6


def test_fill_equally():
    assert fill_equally(7, torch.tensor([5, 5, 5])).tolist() == [3, 2, 2]
    assert fill_equally(7, torch.tensor([1, 5, 5])).tolist() == [1, 3, 3]
    assert fill_equally(20, torch.tensor([1, 2, 3])).tolist() == [1, 2, 3]
    assert fill_equally(0, torch.tensor([4, 4])).tolist() == [0, 0]


def test_top_per_frame_ties_to_the_lower_index():
    score = torch.tensor([[0.5, 0.5, 0.1], [0.0, 1.0, 2.0]])
    assert top_per_frame(score, torch.tensor([1, 2])).tolist() == [[True, False, False], [False, True, True]]


def test_merge_weights_the_context_token_at_least_beta():
    context = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sources = torch.tensor([[1.0, 0.0], [3.0, 0.1], [0.0, 1.0]])  # the first two join context 0
    merged, assign = merge_into_context(sources, context, 0.6)
    assert assign.tolist() == [0, 0, 1]
    torch.testing.assert_close(merged, torch.tensor([[0.6 + 0.4 * 2.0, 0.4 * 0.05], [0.0, 1.0]]))
    merged, _ = merge_into_context(sources, context, 0.0)  # w = 1 / (|S| + 1) = 1/3, 1/2
    torch.testing.assert_close(merged[0], torch.tensor([1 / 3 + 2 / 3 * 2.0, 2 / 3 * 0.05]))


@pytest.mark.parametrize("params", [{"min_segments": 0}, {"min_segments": 2.5}, {"anchor_interval": True},
                                    {"context_ratio": 1.0}, {"context_ratio": -0.1}, {"context_weight": 1.5},
                                    {"cut_threshold": "0.9"}])
def test_bad_parameters_are_rejected(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        FastVIDConfig(**params)


# ---- tiny models --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny_model(family)
        return cache[family]

    return get


@pytest.mark.parametrize("family,saliency", [("qwen2_vl", "attention"), ("qwen3_vl", "attention"),
                                             ("llava_onevision", "attention"), ("internvl", "norm")])
def test_generates_on_tiny_models_at_the_budget(family, saliency, tiny):
    model, processor = tiny(family)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    out, stats = generate_reduced(model, inputs, 2, "fastvid", 0.25, saliency=saliency)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert stats.method == "fastvid"
    assert abs(stats.kept_ratio - 0.25) <= 0.05, stats.to_dict()


def test_attention_saliency_is_refused_where_the_tower_is_not_read(tiny):
    model, _ = tiny("internvl")
    with pytest.raises(ValueError, match="norm"):
        apply_fastvid(model, 0.25, saliency="attention")
    with pytest.raises(ValueError, match="saliency"):
        apply_fastvid(model, 0.25, saliency=None)


def test_budget_one_is_the_dense_model(tiny):
    model, processor = tiny("qwen2_vl")
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    with torch.no_grad():
        dense = model(**inputs).logits
    logits, stats = forward_reduced(model, inputs, "fastvid", 1.0)
    torch.testing.assert_close(logits, dense)
    assert stats.kept_ratio == 1.0
