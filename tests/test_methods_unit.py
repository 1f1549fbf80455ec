"""Tensor-level unit tests of the comparison methods' selection functions, without any model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from framefusion.core.contract import QueryKeys
from framefusion.core.layout import VideoGrid, layout_from_videos
from framefusion.core.patches import PatchStack
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import KEPT, PRUNED
from framefusion.methods import METHODS, apply_method, get_method, method_names, select_frames
from framefusion.methods.common import check_budget
from framefusion.methods.evs import evs_dissimilarity, evs_keep_count, evs_retention_mask
from framefusion.methods.fastv import fastv_keep, fastv_keep_count, fastv_layer, fastv_point
from framefusion.methods.oneshot import OneShotReduction, keep_per_video
from framefusion.methods.streamingllm import StreamingReduction, choose_window, sink_window_allowed, span_positions
from framefusion.methods.uniform import (
    SAMPLING_ATTRIBUTE,
    UniformReduction,
    UniformSelections,
    select_uniform_frames,
    uniform_frame_count,
    uniform_indices,
)
from framefusion.methods.vidcom2 import (
    centre_similarities,
    frame_budgets,
    frame_retention_rates,
    keep_lowest_per_frame,
    low_variance_channels,
    multiscale_gaussian,
    vidcom2_video_mask,
)
from framefusion.video import VideoClip


def one_video_layout(frames=4, rows=2, cols=2, start=5, text_after=6, gap=0, raw=1):
    """A prompt of `start` text tokens, one video (frames separated by `gap` text tokens), then text."""
    per_frame = rows * cols
    positions = torch.cat([torch.arange(per_frame) + start + f * (per_frame + gap) for f in range(frames)])
    seq_len = int(positions[-1]) + 1 + text_after
    return layout_from_videos(seq_len, [positions], [VideoGrid(frames, rows, cols, raw)])


# ---- registry and parameters ------------------------------------------------------------------------------
def test_registry_has_every_method_with_its_parameters():
    assert method_names() == ["dense", "framefusion", "fastv", "streamingllm", "vidcom2", "evs", "uniform", "visionzip",
                              "fastvid", "holitom", "dycoke", "flashvid"]
    assert get_method("framefusion").params == ("similarity_lower_bound", "ratio_lower_bound", "importance_queries")
    assert get_method("uniform").select_frames is not None
    assert all(METHODS[n].select_frames is None for n in method_names() if n != "uniform")
    with pytest.raises(ValueError, match="choose from"):
        get_method("nope")


def test_apply_method_drops_other_methods_parameters_and_rejects_unknown_ones():
    model = nn.Linear(1, 1)
    assert apply_method(model, "dense", 0.3, similarity_lower_bound=0.6, sink=4) is model
    with pytest.raises(TypeError, match="similarity_lowr_bound"):
        apply_method(model, "dense", 0.3, similarity_lowr_bound=0.6)


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), True, "0.3"])
def test_budget_out_of_range_is_rejected(budget):
    with pytest.raises(ValueError, match="budget"):
        check_budget(budget)


def test_select_frames_passes_the_clip_through_for_token_methods():
    clip = VideoClip(np.zeros((6, 4, 4, 3), np.uint8), np.arange(6) * 0.5, 30.0, 3.0)
    model = torch.nn.Linear(1, 1)  # token methods never look at the model
    for name in ("dense", "framefusion", "fastv", "streamingllm", "vidcom2", "evs"):
        assert select_frames(name, clip, 0.3, model) is clip


# ---- FastV ------------------------------------------------------------------------------------------------
def test_fastv_keep_count_lands_the_mean_over_layers_on_the_budget():
    for layers in (8, 12, 16, 28, 32):
        for budget in (0.3, 0.4, 0.5, 0.7, 1.0):
            point = fastv_point(layers)
            if layers * budget <= point:
                continue
            n_v = 1000
            k = fastv_keep_count(n_v, layers, budget, point)
            mean = (point * n_v + (layers - point) * k) / (layers * n_v)
            assert abs(mean - budget) <= 0.5 / n_v + 1e-12, (layers, budget, k)
    assert fastv_keep_count(1000, 12, 0.3, 3) == round(1000 * (12 * 0.3 - 3) / 9)


def test_fastv_point_and_unreachable_budget():
    assert fastv_point(12) == 3  # after layer K = 2's attention
    assert fastv_point(3) == 2 and fastv_point(2) == 1  # shallow models prune before their last layer
    assert fastv_point(1) is None  # nothing after any attention can shrink a KV cache
    assert fastv_keep_count(100, 8, 0.3, 3) == 0  # 8 * 0.3 < 3 dense layers: keep the minimum
    assert fastv_keep_count(100, 12, 1.0, 3) == 100


def test_fastv_layer_is_two_unless_the_model_is_too_shallow_for_the_budget():
    assert [fastv_layer(28, budget) for budget in (0.1, 0.2, 0.3, 0.5, 1.0)] == [1, 2, 2, 2, 2]
    assert [fastv_layer(4, budget) for budget in (0.2, 0.3, 0.5, 0.6, 1.0)] == [0, 0, 0, 1, 2]
    assert fastv_layer(8, 0.3) == 1 and fastv_layer(12, 0.3) == 2 and fastv_layer(10, 0.3) == 1  # 10 * 0.3 > 3 in floats
    for layers in (2, 4, 6, 8, 12, 28):
        for budget in (0.26, 0.3, 0.4, 0.5, 0.75):
            point = fastv_point(layers, fastv_layer(layers, budget))
            if point is None or layers * budget <= 1:
                continue
            assert point < layers * budget  # some video tokens survive the prune: the budget is reachable
            k = fastv_keep_count(1000, layers, budget, point)
            assert abs((point * 1000 + (layers - point) * k) / (layers * 1000) - budget) <= 0.0005


def test_fastv_keeps_the_tokens_the_last_query_attends_to():
    layout = one_video_layout(frames=2, rows=2, cols=2, start=2, text_after=3)  # 8 video tokens, N = 13
    n = layout.seq_len
    keys = torch.zeros(1, n, 4)
    favoured = layout.positions[[1, 6, 7]]
    keys[0, favoured, 0] = 5.0
    attention = QueryKeys(queries=torch.tensor([[[1.0, 0.0, 0.0, 0.0]] * 2]), keys=keys, scaling=1.0)
    keep = fastv_keep(layout, None, attention, keep_count=3)
    assert torch.nonzero(keep).flatten().tolist() == [1, 6, 7]
    keep = fastv_keep(layout, None, attention, keep_count=0)
    assert int(keep.sum()) == 1 and bool(keep[1])  # one per video, the most important (earliest on ties)


# ---- StreamingLLM -----------------------------------------------------------------------------------------
def test_streaming_window_holds_the_budget_of_video_tokens():
    positions = torch.arange(10, 110)  # N_v = 100 after 10 text tokens; 20 question tokens follow
    for budget in (0.05, 0.3, 0.5, 0.77, 1.0):
        window = choose_window(positions, 130, budget)
        span = span_positions(130, window)
        assert int(torch.isin(positions, span).sum()) == round(budget * 100)
        assert window >= 20  # the question text at the end is always in the window
    assert choose_window(positions, 130, 0.3) == 130 - 80  # it starts right after the last video token left out
    assert choose_window(positions, 130, 1.0) == 130 - 8  # budget 1: everything after the sink


def test_streaming_window_counts_video_tokens_in_the_sink():
    positions = torch.arange(2, 102)  # 6 video tokens inside the 8-token sink
    window = choose_window(positions, 120, 0.3)
    assert int(torch.isin(positions, span_positions(120, window)).sum()) == 30
    window = choose_window(positions, 120, 0.02)  # target 2 < 6 in the sink: only the trailing text
    assert window == 120 - 102
    gaps = torch.tensor([10, 11, 20, 21, 30, 31])  # frames of two tokens with text between them
    assert choose_window(gaps, 40, 0.67) == 40 - 12  # four tokens: from the text after position 11 on


def test_sink_window_mask_matches_its_definition():
    n, window, sink = 14, 4, 3
    allowed = sink_window_allowed(n, window, sink)
    for i in range(n):
        for j in range(n):
            assert bool(allowed[i, j]) == (j <= i and (j < sink or i - j < window)), (i, j)


def test_streaming_reducer_mask_cache_rows_and_stats():
    layout = one_video_layout(frames=8, rows=2, cols=2, start=10, text_after=6)  # N_v = 32, N = 48
    run = StreamingReduction(layout, 4, torch.device("cpu"), budget=0.25)
    assert run.window == 48 - int(layout.positions[23]) - 1
    assert run.kv_keep.tolist() == list(range(8)) + list(range(48 - run.window, 48))
    eager = run.prefill_attention_mask("eager", torch.float32, torch.device("cpu"))
    assert eager.shape == (1, 1, 48, 48) and eager.dtype == torch.float32
    assert eager[0, 0, 47, 9] == torch.finfo(torch.float32).min and eager[0, 0, 47, 3] == 0
    assert run.prefill_attention_mask("sdpa", torch.float32, torch.device("cpu")).dtype == torch.bool
    stats = run.stats()
    assert stats.method == "streamingllm" and stats.kept_ratio == 0.25
    assert stats.prefill_ratio == 1.0 and stats.to_dict()["prefill_ratio"] == 1.0  # prefill runs every token
    assert stats.tokens_per_layer() == [8 + run.window] * 4
    evicted = stats.removed_by == PRUNED
    assert int(evicted.sum()) == 24 and bool((stats.removed_at[evicted] == 0).all())
    assert bool((stats.removed_by[~evicted] == KEPT).all())
    dense = StreamingReduction(layout, 4, torch.device("cpu"), budget=1.0)
    assert dense.kv_keep is None and dense.prefill_attention_mask("sdpa", torch.float32, None) is None
    assert dense.stats().kept_ratio == 1.0


# ---- EVS --------------------------------------------------------------------------------------------------
def test_evs_keep_count():
    assert evs_keep_count(8, 16, 0.3) == round(0.3 * 128)
    assert evs_keep_count(8, 16, 0.05) == 16  # at least the whole first frame
    assert evs_keep_count(8, 16, 1.0) == 128


def test_evs_dissimilarity_is_one_minus_cosine_with_the_previous_frame():
    features = torch.randn(3, 4, 8)
    score = evs_dissimilarity(features)
    assert bool((score[0] == 255.0).all())
    for f in (1, 2):
        for p in range(4):
            expected = 1 - torch.nn.functional.cosine_similarity(features[f, p], features[f - 1, p], dim=0)
            assert score[f, p] == pytest.approx(float(expected), abs=1e-6)


def test_evs_keeps_the_whole_first_frame_even_when_it_is_static():
    features = torch.ones(6, 4, 8)  # nothing ever changes
    features[3, 2] = -1.0  # one token changes completely
    keep = evs_retention_mask(features, budget=0.25).view(6, 4)
    assert bool(keep[0].all())
    assert bool(keep[3, 2])
    assert int(keep.sum()) == 6


def test_evs_ranks_globally_not_per_frame():
    torch.manual_seed(0)
    base = torch.randn(1, 4, 8)
    features = base.repeat(5, 1, 1) + 1e-3 * torch.randn(5, 4, 8)
    features[4] = torch.randn(4, 8)  # all the change is in the last frame
    keep = evs_retention_mask(features, budget=0.4).view(5, 4)  # 8 tokens: frame 0 and all of frame 4
    assert keep[0].all() and keep[4].all() and not keep[1:4].any()


def test_evs_keep_handles_each_video_of_a_prompt():
    grid = VideoGrid(3, 2, 2)
    layout = layout_from_videos(40, [torch.arange(2, 14), torch.arange(20, 32)], [grid, grid])
    keep = keep_per_video(layout, torch.randn(24, 8), 0.5, evs_retention_mask).keep
    assert int(keep[:12].sum()) == 6 and int(keep[12:].sum()) == 6
    assert keep[:4].all() and keep[12:16].all()


# ---- VidCom2 ----------------------------------------------------------------------------------------------
def test_channel_selection_picks_the_lowest_variance_half():
    torch.manual_seed(0)
    scales = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 2.0, 0.01])
    features = torch.randn(500, 8) * scales
    assert sorted(low_variance_channels(features).tolist()) == [1, 3, 5, 7]


def test_multiscale_gaussian_and_centre_scores():
    x = torch.zeros(2, 3)
    assert multiscale_gaussian(x, torch.zeros(3)).tolist() == [5.0, 5.0]  # five bandwidths, distance 0
    far = multiscale_gaussian(torch.tensor([[10.0, 0.0, 0.0]]), torch.zeros(3))
    assert float(far) < 1e-6
    frames = torch.ones(2, 3, 4)
    frames[1, 2] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    video, frame = centre_similarities(frames)
    assert video.shape == (2, 3) and frame.shape == (2, 3)
    assert int(video.argmin()) == 5 and float(frame[1].min()) == float(frame[1, 2])


def test_frame_retention_rates_follow_distinctiveness_and_clip_at_one():
    rates = frame_retention_rates(torch.tensor([0.0, 0.1, 0.02, 0.05]), budget=0.3)
    assert int(rates.argmax()) == 1
    assert float(rates.sum()) == pytest.approx(0.3 * 4)  # mean(p) keeps the total at budget * T
    clipped = frame_retention_rates(torch.tensor([0.0, 1.0]), budget=0.9)
    assert float(clipped.max()) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_frame_budgets_sum_to_the_target_and_are_clipped(seed):
    generator = torch.Generator().manual_seed(seed)
    frames = int(torch.randint(1, 12, (1,), generator=generator))
    capacity = int(torch.randint(1, 20, (1,), generator=generator))
    weights = torch.rand(frames, generator=generator) ** 4 + 1e-3
    target = int(torch.randint(frames, frames * capacity + 1, (1,), generator=generator))
    counts = frame_budgets(weights, capacity, target)
    assert int(counts.sum()) == target
    assert bool((counts >= 1).all()) and bool((counts <= capacity).all())


def test_frame_budgets_redistribute_the_clipped_mass():
    counts = frame_budgets(torch.tensor([10.0, 1.0, 1.0, 2.0]), capacity=8, target=16)
    assert counts.tolist() == [8, 2, 2, 4]  # frame 0 is capped at 8; the rest share 8 as 1:1:2
    assert frame_budgets(torch.tensor([1.0, 1.0]), 4, 100).tolist() == [4, 4]  # target clamped to T * P
    assert frame_budgets(torch.tensor([1.0, 100.0]), 4, 1).tolist() == [1, 1]  # at least one per frame


def test_keep_lowest_per_frame():
    score = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    keep = keep_lowest_per_frame(score, torch.tensor([2, 3]))
    assert keep.tolist() == [[False, True, False, True], [True, True, False, True]]


def test_vidcom2_keeps_the_outliers_and_meets_the_target():
    torch.manual_seed(0)
    frames, patches, dim = 6, 16, 32
    common = torch.randn(dim)
    features = common + 0.01 * torch.randn(frames, patches, dim)
    outliers = [(0, 3), (2, 7), (2, 8), (5, 0)]
    for f, p in outliers:
        features[f, p] = torch.randn(dim) * 3
    keep = vidcom2_video_mask(features, budget=0.25).view(frames, patches)
    assert int(keep.sum()) == round(0.25 * frames * patches)
    assert all(bool(keep[f, p]) for f, p in outliers)
    assert bool((keep.sum(dim=1) >= 1).all())


def test_vidcom2_keep_handles_each_video_of_a_prompt():
    grid = VideoGrid(4, 2, 2)
    layout = layout_from_videos(50, [torch.arange(2, 18), torch.arange(25, 41)], [grid, grid])
    keep = keep_per_video(layout, torch.randn(32, 16), 0.5, vidcom2_video_mask).keep
    assert int(keep[:16].sum()) == 8 and int(keep[16:].sum()) == 8


# ---- the shared one-shot reducer ----------------------------------------------------------------------------
def test_one_shot_reduction_removes_rows_once_and_reports_them():
    layout = one_video_layout(frames=2, rows=2, cols=2, start=3, text_after=2)  # N_v = 8, N = 13
    chosen = torch.tensor([True, False, True, False, True, True, False, True])
    run = OneShotReduction(layout, 4, torch.device("cpu"), "test", 0, lambda lay, hidden, att: chosen)
    hidden = torch.arange(13, dtype=torch.float32).view(1, 13, 1).expand(1, 13, 2)
    assert not run.prunes_at(0) and not run.finished
    out = run.step(0, hidden)
    removed = layout.positions[~chosen].tolist()
    assert out[0, :, 0].tolist() == [p for p in range(13) if p not in removed]
    assert run.alive.tolist() == [p for p in range(13) if p not in removed] and run.version == 1 and run.finished
    stats = run.stats()
    assert stats.method == "test" and stats.kept_ratio == 5 / 8
    assert stats.tokens_per_layer() == [10] * 4 and stats.steps[0].removed == 3
    needs = OneShotReduction(layout, 4, torch.device("cpu"), "x", 3, lambda *a: chosen, needs_attention=True)
    assert needs.prunes_at(3) and not needs.prunes_at(2)
    with pytest.raises(RuntimeError, match="attention"):
        needs.step(3, hidden)


# ---- uniform ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames, budget, patch, expected", [
    (16, 0.3, 1, 5), (16, 0.5, 1, 8), (16, 0.3, 2, 4), (16, 0.5, 2, 8), (16, 1.0, 2, 16),
    (16, 0.01, 1, 2), (16, 0.01, 2, 2), (1, 0.3, 1, 1), (2, 0.3, 2, 2), (15, 1.0, 2, 15), (15, 0.5, 2, 8),
])
def test_uniform_frame_count(frames, budget, patch, expected):
    assert uniform_frame_count(frames, budget, patch) == expected


def test_uniform_counts_are_even_for_two_frame_patches():
    for frames in range(2, 40):
        for budget in (0.1, 0.25, 0.3, 0.5, 0.7):
            count = uniform_frame_count(frames, budget, 2)
            assert count >= 2 and (count % 2 == 0 or count == frames)


def test_uniform_indices_are_spread_and_unique():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert uniform_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    for n in range(1, 30):
        for k in range(1, n + 1):
            index = uniform_indices(n, k)
            assert len(set(index.tolist())) == k and index.min() >= 0 and index.max() < n


def test_uniform_selection_and_its_kept_ratio_against_the_full_clip():
    clip = VideoClip(np.arange(16)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3).astype(np.uint8),
                     np.arange(16) * 0.5, 30.0, 8.0, "v.mp4")
    model = nn.Module()  # no vision config: one frame per grid frame
    selections = UniformSelections()  # what apply_uniform puts on the model it is installed on
    PatchStack().set_attribute(model, SAMPLING_ATTRIBUTE, selections)
    small = select_uniform_frames(clip, 0.5, model=model)
    assert small.num_frames == 8 and small.frames[:, 0, 0, 0].tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert small.timestamps.tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5] and small.source == "v.mp4"
    layout = one_video_layout(frames=8, rows=2, cols=2)  # the reduced clip as the model sees it
    stats = UniformReduction(layout, DecoderStack.attention_only(4), torch.device("cpu"), selections).stats()
    assert stats.method == "uniform" and stats.full_vision_tokens == 64 and stats.kept_ratio == 0.5
    assert math.isclose(stats.to_dict()["kept_ratio"], 0.5)
    unknown = UniformReduction(one_video_layout(frames=7, rows=2, cols=2), DecoderStack.attention_only(4),
                               torch.device("cpu"), selections).stats()
    assert unknown.kept_ratio == 1.0  # frames not chosen by select_frames: measured against themselves
