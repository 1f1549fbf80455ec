"""FlashVID: the tensor functions against the slow reference, the counts and the budget, and end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import forward_reduced, generate_reduced, make_random_clip
from reference_flashvid import clusters_per_frame, reference_flashvid_video

from framefusion import last_stats, remove_framefusion
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import MERGED, PRUNED
from framefusion.methods import apply_method
from framefusion.methods.flashvid import (
    LLAVA_SCRIPT,
    QWEN3_SCRIPT,
    QWEN25_SCRIPT,
    FlashVIDConfig,
    apply_flashvid,
    authors_frame_counts,
    matched_frame_counts,
    matched_inner_count,
    matched_split,
    pruning_point,
)
from framefusion.methods.flashvid_video import (
    cluster_counts,
    diverse_picks,
    flashvid_video,
    tree_links,
    tree_roots,
    tree_states,
)
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in the video?"


def video_with_static_patches(frames, patches, dim=8, seed=0, static_share=0.5, noise=0.05):
    """Random features [T, P, D] in which a share of the patches repeat (plus noise) over runs of frames; a saliency."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, patches, dim, generator=g) + 0.5  # a common component: event relevance mostly > 0
    for p in range(patches):
        if frames > 1 and torch.rand(1, generator=g).item() < static_share:
            u = int(torch.randint(0, frames - 1, (1,), generator=g))
            v = int(torch.randint(u + 1, frames, (1,), generator=g))
            x[u:v + 1, p] = x[u, p] + noise * torch.randn(v - u + 1, dim, generator=g)
    return x, torch.rand(frames, patches, generator=g) / patches


def fast_video(x, saliency, budget, rule, selection, min_segments=4, **kw):
    frames, patches, _ = x.shape
    if rule == "authors":
        selected, context = authors_frame_counts(frames, patches, budget, 1.25, 0.7)
    else:
        selected, context = matched_frame_counts(frames, patches, budget, 0.7)
    return flashvid_video(x, saliency, selected, context, selection=selection, min_segments=min_segments,
                          exact=rule == "matched", tree_weights="authors" if rule == "authors" else "mean", **kw)


# ---- outer stage == reference ------------------------------------------------------------------------------
CASES = [(1, 9), (2, 4), (4, 9), (6, 16), (8, 12)]


@pytest.mark.parametrize("frames,patches", CASES)
@pytest.mark.parametrize("rule", ["matched", "authors"])
@pytest.mark.parametrize("selection", ["attn_div", "attn_div_v2", "attn", "div"])
def test_outer_stage_matches_the_reference(frames, patches, rule, selection):
    for seed, budget in enumerate([0.1, 0.25, 0.3, 0.6]):
        x, saliency = video_with_static_patches(frames, patches, seed=seed + 10 * frames)
        fast = fast_video(x, saliency, budget, rule, selection)
        keep, features, merged_into = reference_flashvid_video(x, saliency, budget, rule, selection)
        assert fast.keep.tolist() == keep, (seed, budget)
        assert fast.merged_into.tolist() == merged_into, (seed, budget)
        assert torch.allclose(fast.features[fast.keep].double(), features[torch.tensor(keep)], atol=1e-5)


@pytest.mark.parametrize("threshold,min_segments", [(0.5, 1), (0.95, 2), (-1.0, 8)])
def test_outer_stage_with_other_thresholds_matches_the_reference(threshold, min_segments):
    for seed, (frames, patches) in enumerate(CASES):
        x, saliency = video_with_static_patches(frames, patches, seed=seed, static_share=0.8)
        for rule in ("matched", "authors"):
            fast = fast_video(x, saliency, 0.3, rule, "attn_div", min_segments=min_segments,
                              temporal_threshold=threshold, segment_threshold=threshold)
            keep, features, merged_into = reference_flashvid_video(
                x, saliency, 0.3, rule, "attn_div", temporal_threshold=threshold, segment_threshold=threshold,
                min_segments=min_segments)
            assert fast.keep.tolist() == keep and fast.merged_into.tolist() == merged_into, (seed, rule)
            assert torch.allclose(fast.features[fast.keep].double(), features[torch.tensor(keep)], atol=1e-5)


@pytest.mark.parametrize("budget", [0.5, 0.6])
def test_a_still_video_lowers_the_temporal_threshold_as_the_reference(budget):
    for seed, (frames, patches) in enumerate(CASES[1:]):  # nearly the same frame throughout: most tokens would merge
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, patches, 8, generator=g) + 0.5 + 0.01 * torch.randn(frames, patches, 8, generator=g)
        saliency = torch.rand(frames, patches, generator=g)
        for rule in ("matched", "authors"):
            fast = fast_video(x, saliency, budget, rule, "attn_div", min_segments=1)
            keep, features, merged_into = reference_flashvid_video(x, saliency, budget, rule, "attn_div",
                                                                   min_segments=1)
            assert fast.keep.tolist() == keep and fast.merged_into.tolist() == merged_into, (seed, rule)
            assert torch.allclose(fast.features[fast.keep].double(), features[torch.tensor(keep)], atol=1e-5)


def test_matched_outer_stage_keeps_exactly_its_share():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        frames, patches = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(2, 30, (1,), generator=g))
        budget = float(torch.rand(1, generator=g)) * 0.9 + 0.05
        x, saliency = video_with_static_patches(frames, patches, seed=seed, static_share=0.8)
        selection = fast_video(x, saliency, budget, "matched", "attn_div_v2", min_segments=int(seed % 5) + 1)
        assert int(selection.keep.sum()) == max(frames, round(budget * frames * patches)), seed
        into = selection.merged_into
        assert (into[selection.keep] == -1).all()
        assert selection.keep[into[into >= 0]].all()  # every merge lands on a kept token


def test_authors_counts_follow_their_floating_point_arithmetic():
    # 24 * 0.1 * 1.25 is 3.0000000000000004 in floating point: 4 tokens a frame, ceil(4 * 0.7) = 3 selected
    counts = {(frames, patches, budget): [c.tolist() for c in
                                                   authors_frame_counts(frames, patches, budget, 1.25, 0.7)]
              for frames, patches, budget in [(2, 24, 0.1), (2, 16, 0.1), (1, 196, 0.25), (1, 9, 1.0)]}
    assert counts == {(2, 24, 0.1): [[3, 3], [1, 1]], (2, 16, 0.1): [[2, 2], [0, 0]],
                      (1, 196, 0.25): [[44], [18]], (1, 9, 1.0): [[7], [2]]}  # the last capped at P = 9
    selected, context = matched_frame_counts(8, 9, 26 / 72, 0.7)  # the demo model at 0.3: 26 of 72
    assert (selected + context).tolist() == [4, 4, 3, 3, 3, 3, 3, 3] and selected.tolist() == [3] * 8


def test_one_frame_segments_never_cluster_a_selected_token():
    for seed in range(10):
        x, saliency = video_with_static_patches(4, 16, seed=seed)
        selection = fast_video(x, saliency, 0.5, "authors", "attn_div", min_segments=8)  # every frame a segment
        per_frame = 10  # ceil(16 * 0.5 * 1.25) = 10: 7 selected, 3 context tokens of the 9 unselected
        assert selection.keep.view(4, 16).sum(dim=1).tolist() == [per_frame] * 4


# ---- the pieces ---------------------------------------------------------------------------------------------
def test_greedy_picks_spread_over_the_frame():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 10.0]])  # two close, two far
    distance = torch.cdist(points, points)[None]  # [1, 4, 4]
    assert diverse_picks(distance, torch.tensor([2]))[0].tolist() == [False, False, True, True]
    assert diverse_picks(distance, torch.tensor([3]))[0].sum() == 3
    assert not diverse_picks(distance, torch.tensor([0])).any()
    chosen = diverse_picks(distance.expand(3, 4, 4), torch.tensor([1, 4, 2]))
    assert chosen.sum(dim=1).tolist() == [1, 4, 2]  # each frame its own count, no token twice


def test_tree_links_follow_the_most_similar_free_token():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.1, 1.0], [1.0, 0.05]], [[1.0, 0.02], [-1.0, 0.2]]])  # [3, 2, 2]
    free = torch.ones(3, 2, dtype=torch.bool)
    merge, parent = tree_links(x, free, 0.8, 0)
    assert merge.tolist() == [[False, False], [True, True], [True, False]]
    assert parent[1:].tolist() == [[1, 0], [1, 0]]
    assert tree_roots(merge, parent).tolist() == [0, 1, 1, 0, 0, 5]  # frame 2's token 0 -> 1.1 -> 0.0
    free[0, 0] = False  # a selected token is no parent
    merge, parent = tree_links(x, free, 0.8, 0)
    assert merge[1].tolist() == [True, False]
    # at least 4 of 6 left: the threshold drops to the k = 6 - 4 = 2nd largest similarity, and (as the authors')
    # only those strictly above it merge: k - 1 = 1, the most similar
    merge, _ = tree_links(x, torch.ones(3, 2, dtype=torch.bool), 0.8, 4)
    assert int(merge.sum()) == 1 and bool(merge[2, 0])


def test_a_tree_is_its_mean_or_the_authors_sum_over_one_plus_its_children():
    x = torch.randn(4, 3, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # patch 0 the same in every frame: a chain of four
    free = torch.ones(4, 3, dtype=torch.bool)
    merge, parent = tree_links(x, free, 0.8, 0)
    root = tree_roots(merge, parent)
    assert root[[0, 3, 6, 9]].tolist() == [0, 0, 0, 0]
    flat = x.reshape(12, 4)
    assert torch.allclose(tree_states(flat, merge, parent, root, "mean")[0], flat[0])
    assert torch.allclose(tree_states(flat, merge, parent, root, "authors")[0], 2 * flat[0])  # 4 / (1 + 1)


def test_cluster_counts_share_the_context_tokens():
    assert cluster_counts(torch.tensor([4, 2]), 6, exact=True) is None  # as many as trees: keep all
    assert cluster_counts(torch.tensor([3, 3, 3]), 2, exact=False).tolist() == [1, 1, 1]  # the authors' ceil
    for trees, total in [([3, 3, 3], 2), ([5, 1, 2, 7], 6), ([1, 1, 1, 1], 1), ([0, 4, 0, 4], 3), ([9, 2], 10)]:
        exact = cluster_counts(torch.tensor(trees), total, exact=True).tolist()
        assert exact == clusters_per_frame(trees, total, "matched") and sum(exact) == total, (trees, total)
        assert all(0 <= c <= t for c, t in zip(exact, trees))
    assert cluster_counts(torch.tensor([3, 3, 3]), 2, exact=True).tolist() == [1, 1, 0]


# ---- budget -------------------------------------------------------------------------------------------------
def test_pruning_layer_scales_with_depth_and_is_absolute_for_the_authors_rule():
    config = FlashVIDConfig()
    assert pruning_point(DecoderStack.attention_only(28), config, QWEN25_SCRIPT, "matched") == 20
    assert pruning_point(DecoderStack.attention_only(4), config, QWEN25_SCRIPT, "matched") == 3
    assert pruning_point(DecoderStack.attention_only(36), config, QWEN3_SCRIPT, "matched") == 28
    assert pruning_point(DecoderStack.attention_only(8), config, QWEN3_SCRIPT, "matched") == 6
    assert pruning_point(DecoderStack.attention_only(1), config, LLAVA_SCRIPT, "matched") is None
    assert pruning_point(DecoderStack.attention_only(28), config, QWEN25_SCRIPT, "authors") == 20
    assert pruning_point(DecoderStack.attention_only(8), config, QWEN25_SCRIPT, "authors") is None
    assert pruning_point(DecoderStack.attention_only(8), FlashVIDConfig(pruning_layer=2), QWEN25_SCRIPT,
                         "authors") == 2
    hybrid = DecoderStack((True, True, True, False) * 4)  # attention layers 3, 7, 11, 15
    assert pruning_point(hybrid, config, QWEN25_SCRIPT, "matched") == 12  # round(16 * 20 / 28) = 11 -> 12


@pytest.mark.parametrize("layers", [4, 8, 28, 36])
@pytest.mark.parametrize("budget", [0.05, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0])
def test_outer_and_inner_counts_land_on_the_budget(layers, budget):
    point = pruning_point(DecoderStack.attention_only(layers), FlashVIDConfig(), QWEN25_SCRIPT, "matched")
    outer = matched_split(budget, layers, point, 0.3)
    assert 0 < outer <= 1
    total = 8 * 196
    alive = round(outer * total)
    m = matched_inner_count(budget, layers, point, total, alive)
    assert 1 <= m <= alive
    assert abs((point * alive + (layers - point) * m) / (layers * total) - budget) <= 1 / total
    assert matched_split(0.3, 28, 20, 0.3) == pytest.approx(0.3 * 1.25)  # the authors' expansion at their depth


@pytest.mark.parametrize("field,value", [("selection", "topk"), ("alpha", 1.5), ("alpha", True),
                                         ("temporal_threshold", float("nan")), ("segment_threshold", 2.0),
                                         ("min_segments", 0), ("expansion", 0.0), ("pruning_layer", 0),
                                         ("pruning_layer", 2.5), ("llm_retention_ratio", 0.0)])
def test_out_of_range_parameters_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        FlashVIDConfig(**{field: value})


def test_apply_rejects_bad_arguments():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="budget"):
        apply_flashvid(model, 0.0)
    with pytest.raises(ValueError, match="budget_rule"):
        apply_flashvid(model, 0.3, budget_rule="paper")
    with pytest.raises(ValueError, match="saliency"):
        apply_flashvid(model, 0.3, saliency="random")
    with pytest.raises(TypeError):
        apply_flashvid(model, 0.3, bogus=1)


# ---- end to end ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,saliency", [("qwen2_vl", "attention"), ("qwen2_5_vl", "attention"),
                                             ("qwen3_vl", "attention"), ("llava_onevision", "attention"),
                                             ("internvl", "norm")])
def test_generates_and_meets_the_budget(family, saliency, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=8)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    for budget in (0.25, 0.3):
        out, stats = generate_reduced(model, inputs, 2, "flashvid", budget, saliency=saliency)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 2
        assert stats.method == "flashvid" and stats.prefill_ratio == stats.kept_ratio
        assert abs(stats.kept_ratio - budget) <= 0.05, stats.to_dict()
        assert [s.point for s in stats.steps] == [0, 6]  # round(8 * 20 / 28) and, for Qwen3-VL, round(8 * 28 / 36)
        assert (stats.removed_by == MERGED).any() and (stats.removed_by == PRUNED).any()


def test_authors_rule_keeps_their_per_frame_count_and_absolute_layer(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_5_vl", num_layers=8)
    inputs = prepare_inputs(processor, [make_random_clip(16, static_fraction=0.5)], QUESTION)
    _, stats = forward_reduced(model, inputs, "flashvid", 0.1, budget_rule="authors")  # K = 20 > 8: no inner prune
    frames, patches = stats.grids[0].frames, stats.grids[0].tokens_per_frame
    per_frame = math.ceil(patches * 0.1 * 1.25)
    assert [s.point for s in stats.steps] == [0]
    assert stats.vision_tokens_per_layer() == [frames * per_frame] * 8
    _, stats = forward_reduced(model, inputs, "flashvid", 0.1, budget_rule="authors", pruning_layer=2)
    assert [s.point for s in stats.steps] == [0, 2]
    assert stats.vision_tokens_per_layer()[2:] == [math.ceil(frames * per_frame * 0.3)] * 6


def test_budget_one_is_the_dense_model(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    dense, _ = forward_reduced(model, inputs, "dense")  # the published dense model
    logits, stats = forward_reduced(model, inputs, "flashvid", 1.0)
    torch.testing.assert_close(logits, dense, atol=1e-5, rtol=1e-5)
    assert stats.kept_ratio == 1.0


def test_attention_saliency_is_refused_where_the_vision_encoder_has_no_probe(tiny_model_factory):
    model, _ = tiny_model_factory("internvl")
    try:
        with pytest.raises(ValueError, match="norm"):
            apply_flashvid(model, 0.3, saliency="attention")
    finally:
        remove_framefusion(model)


def test_the_demo_model_is_on_budget():
    from framefusion.pipeline.loading import load_model

    loaded = load_model("demo", device="cpu")
    inputs = prepare_inputs(loaded.processor, [make_random_clip(16, size=48, static_fraction=0.5)], QUESTION)
    for budget in (0.1, 0.25, 0.3):
        _, stats = forward_reduced(loaded.model, inputs, "flashvid", budget)
        assert abs(stats.kept_ratio - budget) <= 0.05, (budget, stats.to_dict())


# ---- against the authors' recorded outputs ------------------------------------------------------------------
RECORDED = Path(__file__).resolve().parents[1] / "benchmarks" / "against_authors" / "flashvid"


def test_matches_the_authors_recorded_outputs(tiny_model_factory):
    """The harness's "memory" case (benchmarks/against_authors/flashvid): the same tiny 28-layer Qwen2.5-VL and clip
    as its ours.py; the kept positions before the LLM and at layer 20 and the greedy ids of the authors' code
    (recorded/theirs.json). Without merges (budget 0.1) against their own noise; with merges (one segment) against
    their code with our density tie-break in place of its noise."""
    import json
    import sys

    sys.path.insert(0, str(RECORDED))
    from settings import CHECKPOINT, CLIP, NEW_TOKENS, QUESTION, SETTINGS, our_params

    recorded = json.loads((RECORDED / "recorded" / "theirs.json").read_text())["cases"]["memory"]["runs"]
    model, processor = tiny_model_factory("qwen2_5_vl", num_layers=CHECKPOINT["num_layers"], seed=CHECKPOINT["seed"])
    clip = make_random_clip(CLIP["frames"], size=CLIP["size"], static_fraction=CLIP["static_fraction"],
                            interval=CLIP["interval"])
    inputs = prepare_inputs(processor, [clip], QUESTION)
    for name, noise in [("authors_0.10", "seed0"), ("authors_0.10_v2", "seed0"), ("authors_0.25_one_segment", "ramp")]:
        setting = SETTINGS[name]
        apply_method(model, "flashvid", setting["budget"], **our_params(setting))
        try:
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True)
            stats = last_stats(model)
        finally:
            remove_framefusion(model)
        theirs = recorded[name][noise]
        torch.testing.assert_close(out.logits[0][0], torch.tensor(theirs["first_logits"]), atol=2e-6, rtol=0)
        positions = stats.vision_positions
        assert sorted(positions[stats.alive_after(0)].tolist()) == theirs["kept_before_llm"], name
        assert sorted(positions[stats.alive_after(20)].tolist()) == theirs["kept_inside_llm"], name
        assert out.sequences[0, inputs["input_ids"].shape[1]:].tolist() == theirs["answer_ids"], name
