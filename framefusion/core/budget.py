"""Token-budget bookkeeping and the paper's FLOP cost model (appendix 9)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

LayerCost = Callable[..., float]  # cost(tokens_in, tokens_out, similarity=False, linear=False): one layer's FLOPs


def remaining_fractions(merge_ratios: Sequence[float]) -> list[float]:
    """S_1..S_m: the fraction of vision tokens left after each recorded merge step."""
    fractions, left = [], 1.0
    for ratio in merge_ratios:
        left *= 1.0 - ratio
        fractions.append(left)
    return fractions


def prune_ratio(num_layers: int, cost: float, merge_ratios: Sequence[float], point: int | None = None) -> float:
    """r: the share of alive vision tokens still to remove, at reduction point `point`, so the KV budget lands on C.

    With m merge steps recorded, layers 0..m-1 hold S_1..S_m; a prune at point p >= m (default m: right after
    merging) leaves layers m..p-1 at S_m and layers p..L-1 at S_m (1 - r), so
    T_m + (p - m) * S_m + (L - p) * S_m * (1 - r) = L * C. (p > m happens on hybrid decoders, where a prune waits
    for the next attention layer.) Returns a value in [0, 1]; 1.0 means the budget is already spent (no positive
    count of tokens fits), which callers treat as "prune to the minimum".
    """
    m = len(merge_ratios)
    p = m if point is None else point
    if p >= num_layers:
        return 0.0  # every layer's KV cache is already fixed: further removal changes no budget
    fractions = remaining_fractions(merge_ratios)
    spent = sum(fractions)
    left = fractions[-1] if fractions else 1.0
    room = num_layers * cost - spent - (p - m) * left
    if room <= 0.0 or left <= 0.0:
        return 1.0
    keep = room / ((num_layers - p) * left)
    return min(max(1.0 - keep, 0.0), 1.0)


def kept_ratio(vision_tokens_per_layer: Sequence[int], num_vision_tokens: int) -> float:
    """Achieved budget: mean over layers of vision tokens in the KV cache, over N_v (1.0 when dense)."""
    if num_vision_tokens == 0 or not vision_tokens_per_layer:
        return 1.0
    return sum(vision_tokens_per_layer) / (len(vision_tokens_per_layer) * num_vision_tokens)


def layer_flops(tokens_in: int, tokens_out: int, hidden: int, ffn: int, similarity: bool = False,
                span: int | None = None, linear: bool = False) -> float:
    """FLOPs of one decoder layer: 4 N D^2 + 2 N^2 D + 3 N' D M, plus 3 N D for similarity.

    With `span`, each query attends to at most that many keys: 2 N min(N, span) D for the scores. A linear-
    attention layer (hybrid decoders) is linear in N: no 2 N^2 D term.
    """
    keys = 0 if linear else tokens_in if span is None else min(tokens_in, span)
    flops = 4 * tokens_in * hidden**2 + 2 * tokens_in * keys * hidden + 3 * tokens_out * hidden * ffn
    if similarity:
        flops += 3 * tokens_in * hidden
    return float(flops)


def causal_gqa_layer_flops(tokens_in: int, tokens_out: int, hidden: int, ffn: int, kv_width: int,
                           similarity: bool = False, linear: bool = False) -> float:
    """One decoder layer's work as a grouped-query, causal model computes it, in the cost model's units:
    q/o projections 2 N D^2, k/v projections 2 N D d_kv, causal scores and values N (N + 1) D (query i sees
    i + 1 keys), FFN 3 N' D M, plus 3 N D for similarity. With d_kv = D it is the cost model minus the masked
    half of the scores. A linear-attention layer has no N^2 term."""
    projections = 2 * tokens_in * hidden**2 + 2 * tokens_in * hidden * kv_width
    attention = 0 if linear else tokens_in * (tokens_in + 1) * hidden
    flops = projections + attention + 3 * tokens_out * hidden * ffn
    if similarity:
        flops += 3 * tokens_in * hidden
    return float(flops)


def paper_layer_cost(hidden: int, ffn: int) -> LayerCost:
    """The paper's cost model (layer_flops) for a model of these widths."""
    return partial(layer_flops, hidden=hidden, ffn=ffn)


def prefill_flops(tokens_per_layer: Sequence[int], tokens_after: Sequence[int], layer_cost: LayerCost,
                  similarity_layers: Sequence[bool] | None = None, linear_layers: Sequence[bool] | None = None) -> float:
    """Total prefill FLOPs of the decoder stack given each layer's token count in and out (and which layers are
    linear attention)."""
    sims = similarity_layers or [False] * len(tokens_per_layer)
    linear = linear_layers or [False] * len(tokens_per_layer)
    return sum(layer_cost(n_in, n_out, similarity=sim, linear=lin)
               for n_in, n_out, sim, lin in zip(tokens_per_layer, tokens_after, sims, linear))


def ideal_speedup(dense_tokens: int, tokens_per_layer: Sequence[int], tokens_after: Sequence[int],
                  layer_cost: LayerCost, similarity_layers: Sequence[bool] | None = None,
                  linear_layers: Sequence[bool] | None = None) -> float:
    """Dense prefill FLOPs over reduced prefill FLOPs: the speed-up a cost per layer predicts."""
    dense_layers = [dense_tokens] * len(tokens_per_layer)
    dense = prefill_flops(dense_layers, dense_layers, layer_cost, linear_layers=linear_layers)
    return dense / prefill_flops(tokens_per_layer, tokens_after, layer_cost, similarity_layers, linear_layers)
