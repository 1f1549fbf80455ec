"""Unit tests of FrameFusion's tensor functions, without any model."""

import math

import pytest
import torch

from framefusion.core.budget import (
    causal_gqa_layer_flops,
    ideal_speedup,
    kept_ratio,
    layer_flops,
    paper_layer_cost,
    prune_ratio,
    remaining_fractions,
)
from framefusion.core.contract import QueryKeys
from framefusion.core.layout import VideoGrid, layout_from_videos
from framefusion.core.merge import chain_order, choose_merges, group_heads, merge_groups, predecessor_similarity
from framefusion.core.prune import attention_importance, keep_most_important, keep_one_per_video
from framefusion.core.stack import DecoderStack
from framefusion.methods.framefusion import FrameFusionConfig, PrefillReduction


# ---- config -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"cost": 0.0}, "cost"),
        ({"cost": 1.5}, "cost"),
        ({"cost": float("nan")}, "cost"),
        ({"similarity_lower_bound": -1.01}, "similarity_lower_bound"),
        ({"ratio_lower_bound": -0.1}, "ratio_lower_bound"),
        ({"ratio_lower_bound": 1.1}, "ratio_lower_bound"),
        ({"importance_queries": 0}, "importance_queries"),
        ({"importance_queries": 2.0}, "importance_queries"),
        ({"importance_queries": True}, "importance_queries"),
    ],
)
def test_config_rejects_out_of_range(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FrameFusionConfig(**kwargs)


def test_config_accepts_edges():
    FrameFusionConfig(cost=1.0, similarity_lower_bound=-1.0, ratio_lower_bound=0.0, importance_queries=1)
    FrameFusionConfig(cost=1e-3, similarity_lower_bound=2.0, ratio_lower_bound=1.0)  # > 1 disables merging


def test_config_takes_the_family_default_only_when_unset():
    assert FrameFusionConfig().with_family_default(4).importance_queries == 4
    assert FrameFusionConfig(importance_queries=2).with_family_default(4).importance_queries == 2


# ---- budget -------------------------------------------------------------------------------------------
def test_prune_ratio_without_merges_is_one_minus_cost():
    assert prune_ratio(28, 0.3, []) == pytest.approx(0.7)


def test_prune_ratio_lands_budget_on_cost():
    L, C, ratios = 28, 0.3, [0.4, 0.2, 0.05]
    r = prune_ratio(L, C, ratios)
    fractions = remaining_fractions(ratios)
    # layers 0..m-1 hold S_1..S_m, layers m.. hold S_m (1 - r)
    per_layer = fractions + [fractions[-1] * (1 - r)] * (L - len(ratios))
    assert sum(per_layer) / L == pytest.approx(C)


def test_prune_ratio_clips_and_reports_spent_budget():
    assert prune_ratio(28, 0.9, [0.5]) == 0.0  # would be negative: nothing to prune
    assert prune_ratio(4, 0.1, [0.5]) == 1.0  # T_1 = 0.5 > L*C = 0.4: spent
    assert prune_ratio(4, 0.3, [0.1] * 4) == 0.0  # every layer's cache already fixed


def test_prune_ratio_uses_the_real_depth():
    assert prune_ratio(12, 0.3, [0.5]) != prune_ratio(28, 0.3, [0.5])


def test_kept_ratio_and_flops():
    assert kept_ratio([10, 10, 5, 5], 10) == pytest.approx(0.75)
    assert kept_ratio([], 0) == 1.0
    assert layer_flops(10, 10, 4, 8) == 4 * 10 * 16 + 2 * 100 * 4 + 3 * 10 * 4 * 8
    assert layer_flops(10, 10, 4, 8, span=3) == 4 * 10 * 16 + 2 * 10 * 3 * 4 + 3 * 10 * 4 * 8
    assert layer_flops(10, 10, 4, 8, span=30) == layer_flops(10, 10, 4, 8)
    cost = paper_layer_cost(8, 16)
    assert ideal_speedup(100, [100, 100], [100, 100], cost) == pytest.approx(1.0)
    assert ideal_speedup(100, [100, 30], [30, 30], cost) == pytest.approx(
        2 * layer_flops(100, 100, 8, 16) / (layer_flops(100, 30, 8, 16) + layer_flops(30, 30, 8, 16)))
    assert ideal_speedup(100, [100, 30], [30, 30], cost, [True, False]) < ideal_speedup(100, [100, 30], [30, 30], cost)


# ---- merge --------------------------------------------------------------------------------------------
def test_chain_order_groups_by_video_and_patch_in_time_order():
    video = torch.tensor([0, 0, 0, 0, 1, 1])
    patch = torch.tensor([0, 1, 0, 1, 0, 0])
    assert chain_order(video, patch).tolist() == [0, 2, 1, 3, 4, 5]


def test_predecessor_similarity_only_within_chains():
    hidden = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    key = torch.tensor([0, 0, 1, 1])
    sim = predecessor_similarity(hidden, key)
    assert sim[0] == -math.inf and sim[2] == -math.inf
    assert sim[1] == pytest.approx(1.0)
    assert sim[3] == pytest.approx(1 / math.sqrt(2))


def test_choose_merges_all_candidates_below_cap():
    sim = torch.tensor([-math.inf, 0.9, 0.5, 0.7])
    merged, ratio, capped = choose_merges(sim, 0.6, cap=0.9, position=torch.arange(4))
    assert merged.tolist() == [False, True, False, True] and ratio == 0.5 and not capped


def test_choose_merges_caps_to_top_k():
    sim = torch.tensor([-math.inf, 0.9, 0.95, 0.7, 0.8])
    merged, ratio, capped = choose_merges(sim, 0.6, cap=0.5, position=torch.arange(5))
    assert capped and ratio == 0.8
    assert merged.tolist() == [False, True, True, False, False]  # floor(0.5 * 5) = 2 most similar


def test_group_heads_and_transitive_mean():
    # chain a b c d: b, c merged -> a holds mean(a, b, c); d stays
    merged = torch.tensor([False, True, True, False])
    assert group_heads(merged).tolist() == [0, 0, 0, 3]
    hidden = torch.tensor([[1.0], [2.0], [6.0], [5.0], [7.0]])  # row 4 is a text token
    rows = torch.tensor([0, 1, 2, 3])
    new, dropped = merge_groups(hidden, rows, merged)
    assert new[0].item() == pytest.approx(3.0) and dropped.tolist() == [1, 2]
    assert new[3].item() == 5.0 and new[4].item() == 7.0


@pytest.mark.parametrize("k", [1, 2, 5])
def test_run_of_k_merged_tokens_leaves_the_mean_of_k_plus_one(k):
    torch.manual_seed(k)
    hidden = torch.randn(k + 1, 8)
    merged = torch.tensor([False] + [True] * k)
    new, dropped = merge_groups(hidden, torch.arange(k + 1), merged)
    assert torch.allclose(new[0], hidden.mean(dim=0), atol=1e-6)
    assert dropped.numel() == k


# ---- prune --------------------------------------------------------------------------------------------
def loop_importance(queries, keys, scaling):
    """Slow reference: for each head and each of the last q rows, a causal softmax over its visible keys."""
    rows, heads, _ = queries.shape
    kv_heads, n, _ = keys.shape
    total = [0.0] * n
    for row in range(rows):
        position = n - rows + row  # the query's own position: it sees keys 0..position
        for head in range(heads):
            key_head = head // (heads // kv_heads)
            scores = [float(queries[row, head] @ keys[key_head, j]) * scaling for j in range(position + 1)]
            top = max(scores)
            weights = [math.exp(score - top) for score in scores]
            for j, weight in enumerate(weights):
                total[j] += weight / sum(weights) / (rows * heads)
    return torch.tensor(total)


@pytest.mark.parametrize("rows", [1, 2, 4, 7])
def test_attention_importance_matches_a_loop_over_heads_and_rows(rows):
    torch.manual_seed(rows)
    heads, kv_heads, n, d = 4, 2, 7, 8
    queries = torch.randn(rows, heads, d)
    keys = torch.randn(kv_heads, n, d)
    got = attention_importance(queries, keys, 0.35)
    torch.testing.assert_close(got, loop_importance(queries, keys, 0.35), atol=1e-6, rtol=1e-5)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-5)
    if rows > 1:  # the earliest of the q rows cannot see the last key: only the later rows give it weight
        assert got[-1] < loop_importance(queries[-1:], keys, 0.35)[-1]


def test_attention_importance_of_one_row_is_the_last_query_softmax():
    torch.manual_seed(0)
    heads, kv_heads, n, d = 4, 2, 7, 8
    query = torch.randn(heads, d)
    keys = torch.randn(kv_heads, n, d)
    k_rep = keys.repeat_interleave(heads // kv_heads, dim=0)
    expected = torch.softmax((query[:, None, :] * k_rep).sum(-1) * 0.35, dim=-1).mean(0)
    torch.testing.assert_close(attention_importance(query[None], keys, 0.35), expected, atol=1e-6, rtol=1e-5)


def test_keep_most_important_and_one_per_video():
    importance = torch.tensor([0.1, 0.5, 0.3, 0.5, 0.05])
    position = torch.arange(5)
    assert keep_most_important(importance, 2, position).tolist() == [False, True, False, True, False]
    video = torch.tensor([0, 0, 1, 1, 2])
    assert keep_one_per_video(importance, video, position).tolist() == [False, True, False, True, True]


# ---- the state machine on synthetic hidden states --------------------------------------------------------
def make_layout(frames=4, rows=2, cols=2, prefix=3, suffix=2):
    n_v = frames * rows * cols
    positions = torch.arange(prefix, prefix + n_v)
    return layout_from_videos(prefix + n_v + suffix, [positions], [VideoGrid(frames, rows, cols)])


def reduction(layout, layers, linear=None, **config):
    """A PrefillReduction on the CPU with prune importance from the last query row."""
    stack = DecoderStack(tuple(linear)) if linear is not None else DecoderStack.attention_only(layers)
    return PrefillReduction(layout, FrameFusionConfig(importance_queries=1, **config), stack, torch.device("cpu"))


def test_state_machine_one_shot_top_k_on_static_video():
    layout = make_layout()
    torch.manual_seed(0)
    base = torch.randn(4, 16)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 3:19] = base.repeat(4, 1) + 1e-3 * torch.randn(16, 16)
    run = reduction(layout, 8, cost=0.3)
    out = run.step(0, hidden)
    # 12 of 16 tokens have a similar predecessor: 0.75 >= cap 0.7 -> floor(0.7 * 16) = 11 merges
    assert out.shape[1] == layout.seq_len - 11
    assert run.finished and run.steps[0].capped
    assert run.stats().vision_tokens_per_layer() == [5] * 8


def test_state_machine_merge_then_prune_and_budget():
    layout = make_layout(frames=8)
    torch.manual_seed(1)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 7:11] = hidden[0, 3:7]  # frame 1 repeats frame 0: 4 similar tokens of 32 (0.125 < 0.2)
    run = reduction(layout, 8, cost=0.3, ratio_lower_bound=0.2)
    out = run.step(0, hidden)
    assert [s.kind for s in run.steps] == ["merge"] and run.merging_done and not run.pruning_done
    assert run.prunes_at(1)
    n = out.shape[1]
    attention = QueryKeys(torch.randn(1, 4, 8), torch.randn(2, n, 8), 0.35)
    run.step(1, out, attention)
    stats = run.stats()
    assert [s.kind for s in stats.steps] == ["merge", "prune"]
    assert abs(stats.kept_ratio - 0.3) < 0.02
    per_layer = stats.vision_tokens_per_layer()
    assert all(a >= b for a, b in zip(per_layer, per_layer[1:]))


def test_state_machine_tight_budget_prunes_to_one_token_per_video():
    layout = make_layout(frames=8)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 7:35] = hidden[0, 3:7].repeat(7, 1) * 1.0  # mostly static, but merging alone over-spends
    run = reduction(layout, 2, cost=0.02, ratio_lower_bound=0.0)
    out = run.step(0, hidden)
    attention = QueryKeys(torch.randn(1, 4, 8), torch.randn(2, out.shape[1], 8), 0.35)
    run.step(1, out, attention)
    stats = run.stats()
    assert stats.steps[-1].kind == "prune"
    assert stats.vision_tokens_per_layer()[-1] == 1


def test_causal_gqa_layer_flops_counts_what_such_a_layer_computes():
    tokens, survivors, hidden, ffn, kv_width = 7, 5, 4, 8, 2
    score_pairs = sum(query + 1 for query in range(tokens))  # query i attends keys 0..i
    expected = (tokens * hidden * hidden * 2  # q and o
                + tokens * hidden * kv_width * 2  # k and v
                + score_pairs * hidden * 2  # q.k scores and the weighted sum of values
                + survivors * 3 * hidden * ffn)  # gate, up, down
    assert causal_gqa_layer_flops(tokens, survivors, hidden, ffn, kv_width) == expected
    # full-width k/v: the paper's cost model less the masked half of the scores
    assert causal_gqa_layer_flops(tokens, survivors, hidden, ffn, hidden) == (
        layer_flops(tokens, survivors, hidden, ffn) - tokens * tokens * hidden + tokens * hidden)
    assert causal_gqa_layer_flops(tokens, survivors, hidden, ffn, kv_width, similarity=True) == expected + 3 * tokens * hidden


def test_stats_token_counts_and_ideal_speedup():
    layout = make_layout(frames=8)
    torch.manual_seed(1)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 7:11] = hidden[0, 3:7]
    run = reduction(layout, 8, cost=0.3, ratio_lower_bound=0.2)
    out = run.step(0, hidden)
    run.step(1, out, QueryKeys(torch.randn(1, 4, 8), torch.randn(2, out.shape[1], 8), 0.35))
    stats = run.stats()
    kv, ffn = stats.tokens_per_layer(), stats.ffn_tokens_per_layer()
    assert kv[0] == layout.seq_len - 4 and ffn[0] < kv[0]  # layer 0 prunes after its attention
    assert ffn[:-1] == kv[1:]
    assert stats.similarity_layers() == [True] + [False] * 7
    assert stats.ideal_speedup(16, 32) > 1.0


# ---- hybrid decoders: the prune waits for an attention layer --------------------------------------------------
@pytest.mark.parametrize("point", [2, 3, 4, 7])
def test_delayed_prune_ratio_lands_the_budget_on_cost(point):
    L, C, ratios = 16, 0.3, [0.4, 0.05]
    r = prune_ratio(L, C, ratios, point)
    fractions = remaining_fractions(ratios)  # layers 0..m-1 hold S_1..S_m
    per_layer = fractions + [fractions[-1]] * (point - len(ratios)) + [fractions[-1] * (1 - r)] * (L - point)
    assert len(per_layer) == L and sum(per_layer) / L == pytest.approx(C)
    assert prune_ratio(L, C, ratios, len(ratios)) == prune_ratio(L, C, ratios)  # no delay: r(m)


def test_delayed_prune_ratio_reports_a_spent_budget_and_the_end_of_the_stack():
    assert prune_ratio(8, 0.3, [0.1], 4) == 1.0  # 0.9 + 3 * 0.9 > 2.4: spent before the prune can run
    assert prune_ratio(8, 0.3, [0.1], 8) == 0.0  # after the last layer nothing changes a KV cache


def test_decoder_stack_prune_points():
    stack = DecoderStack((True, True, True, False) * 2)
    assert [p for p in range(10) if stack.attends_before(p)] == [4]  # point 8 follows the last layer
    assert stack.attention_point_from(1) == 4 and stack.attention_point_from(5) is None and stack.hybrid
    assert not DecoderStack.attention_only(3).hybrid and DecoderStack.attention_only(3).attends_before(1)


def test_hybrid_state_machine_waits_and_corrects_the_ratio():
    layout = make_layout(frames=8)
    torch.manual_seed(1)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 7:11] = hidden[0, 3:7]  # 4 similar tokens of 32: merging ends at point 0 (0.125 < 0.2)
    run = reduction(layout, 16, linear=(True, True, True, False) * 4, cost=0.3, ratio_lower_bound=0.2)
    out = run.step(0, hidden)
    assert run.merging_done and not run.prunes_at(1) and not run.prunes_at(3) and run.prunes_at(4)
    for point in (1, 2, 3):
        assert run.step(point, out) is out  # after linear layers nothing happens
    out = run.step(4, out, QueryKeys(torch.randn(1, 4, 8), torch.randn(2, out.shape[1], 8), 0.35))
    stats = run.stats()
    assert [(s.point, s.kind) for s in stats.steps] == [(0, "merge"), (4, "prune")]
    assert stats.steps[1].ratio == pytest.approx(prune_ratio(16, 0.3, [0.125], 4))
    assert abs(stats.kept_ratio - 0.3) < 0.02


def test_linear_attention_layers_cost_linear_in_tokens():
    assert layer_flops(10, 10, 4, 8, linear=True) == 4 * 10 * 16 + 3 * 10 * 4 * 8
    assert causal_gqa_layer_flops(10, 10, 4, 8, 2, linear=True) == 2 * 10 * 16 + 2 * 10 * 4 * 2 + 3 * 10 * 4 * 8
    cost = paper_layer_cost(8, 16)
    hybrid = ideal_speedup(100, [100, 30], [30, 30], cost, linear_layers=[True, False])
    assert hybrid == pytest.approx((2 * layer_flops(100, 100, 8, 16) - 2 * 100 * 100 * 8) /
                                   (layer_flops(100, 30, 8, 16, linear=True) + layer_flops(30, 30, 8, 16)))
