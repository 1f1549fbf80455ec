"""FastV (arXiv 2403.06764) as the FrameFusion paper runs it: after the attention of layer K = 2, prune video
tokens by the attention the last prompt query gives them, once, so that the mean over layers of video tokens
in the KV cache equals the budget.

Layers 0..K hold all N_v video tokens in their KV cache (layer K's attention still saw them), layers K+1..L-1
hold the k kept ones, so  (K+1) * N_v + (L-K-1) * k = L * C * N_v, i.e.

    k = round(N_v * (L * C - (K + 1)) / (L - K - 1))      clipped to [0, N_v]

K is the paper's 2 unless the model is too shallow for the budget: by default (layer=None) K is the largest
of 0, 1, 2 with K + 1 < L * C, so that some video tokens survive past layer K and the budget is met (a
4-layer model prunes after layer 0 at budgets up to 0.5; every 28-layer model keeps K = 2 down to budget
0.11). The step's `point` (K + 1) in the statistics says which K ran. When L * C <= K + 1 even so, the
budget cannot be met: FastV keeps the fewest it may (one token per video) and the statistics report the
budget it reached. A model with L <= K + 1 layers prunes after layer L - 2 instead (the last layer is then
the only reduced one); a one-layer model cannot prune by attention at all.

Against the authors' code (pkunlp-icler/FastV @d165972, the "inplace" token drop in their transformers 4.31 fork's
LlamaModel.forward; benchmarks/against_authors/fastv, a tiny LLaMA language model): our `layer` K is their
`fast_v_agg_layer` K + 1 (they drop tokens before layer AGG_LAYER, ranked by layer AGG_LAYER - 1's attention; here
after layer K's attention, ranked by it), and with that and their ATTENTION_RANK = our k the kept sets are identical
and the logits agree within 2.1e-7. So this K = 2 is their agg layer 3 (their demo's `fastv_k: 3`), and the paper's
"K = 2" read as their agg layer 2 is layer=1 here. Their ATTENTION_RANK is a fixed count ((1 - R) N for their R);
here k follows from the budget (the formula above); to reproduce their K, R: layer=K - 1, budget = (K + (L - K)(1 -
R)) / L. Their inplace path has no KV cache (their README); this one prunes the cache too.
"""

from __future__ import annotations

import math

from torch import nn

from framefusion.core.prune import attention_importance, keep_most_important, keep_one_per_video
from framefusion.methods.common import check_budget
from framefusion.methods.install import install_reducer
from framefusion.methods.oneshot import OneShotReduction

FASTV_LAYER = 2  # K: prune after this layer's attention (the paper's setting, appendix 7)


def fastv_layer(num_layers: int, budget: float, layer: int = FASTV_LAYER) -> int:
    """K: `layer`, lowered to the largest K >= 0 with K + 1 < L * budget when the model is too shallow for it."""
    reachable = math.ceil(round(num_layers * budget, 9)) - 2  # the largest K with K + 1 < L * C (10 * 0.3 is 3)
    return max(0, min(layer, reachable))


def fastv_point(num_layers: int, layer: int = FASTV_LAYER) -> int | None:
    """The reduction point l + 1 after which the KV caches shrink; None when the model is too shallow (L = 1)."""
    point = min(layer + 1, num_layers - 1)
    return point if point >= 1 else None


def fastv_keep_count(num_vision: int, num_layers: int, budget: float, point: int) -> int:
    """k: video tokens kept so that (point * N_v + (L - point) * k) / (L * N_v) = budget, clipped to [0, N_v]."""
    k = round(num_vision * (num_layers * budget - point) / (num_layers - point))
    return min(max(k, 0), num_vision)


def fastv_keep(layout, vision_hidden, attention, keep_count: int):
    """keep [N_v] bool: the keep_count video tokens the last query attends to most (one per video if 0)."""
    positions = layout.positions.to(attention.keys.device)
    importance = attention_importance(attention.queries, attention.keys, attention.scaling)[positions]  # [N_v]
    if keep_count > 0:
        return keep_most_important(importance, keep_count, positions)
    return keep_one_per_video(importance, layout.video.to(positions.device), positions)


def apply_fastv(model: nn.Module, budget: float = 0.3, layer: int | None = None) -> nn.Module:
    """Install FastV in place: prune after layer `layer`'s attention so the mean KV budget is `budget`.

    layer=None: K = 2, lowered on models too shallow for the budget (see fastv_layer).
    """
    check_budget(budget)
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise ValueError(f"layer={layer!r} is out of range: expected an integer >= 0 or None (automatic)")

    def make_reducer(layout, stack, device):
        num_layers = stack.num_layers
        chosen = fastv_layer(num_layers, budget) if layer is None else layer
        point = fastv_point(num_layers, chosen)
        if point is not None:  # hybrid decoders: after the first attention layer at or past K (none: no prune)
            point = stack.attention_point_from(point)
        count = fastv_keep_count(layout.num_vision_tokens, num_layers, budget, point) if point else 0
        return OneShotReduction(layout, num_layers, device, "fastv", point,
                                lambda lay, hidden, attention: fastv_keep(lay, hidden, attention, count),
                                needs_attention=True)

    return install_reducer(model, make_reducer, f"FastV(budget={budget}, layer={'auto' if layer is None else layer})")
