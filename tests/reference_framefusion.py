"""A slow, plain reference of FrameFusion (loops over tokens), written straight from the algorithm doc.

It shares no algorithm code with the engine: it runs the model's decoder layers itself with an explicit
eager attention, keeps Python lists of alive positions, finds predecessors by scanning backwards, groups
merges chain by chain, and recomputes the budget formula from its definition. Only the model's own
modules (norms, projections, MLP, rotary cos/sin captured from a dense run) are reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class ReferenceResult:
    kv_vision: list[list[int]]  # per layer: sorted positions of vision tokens in its KV cache
    final_positions: list[int]  # alive positions after the last layer
    logits: torch.Tensor  # [n_final, V]
    steps: list[tuple[int, str, int]] = field(default_factory=list)  # (point, kind, removed)
    caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (K [H_kv, n, d], V)


def budget_prune_ratio(num_layers: int, cost: float, ratios: list[float], point: int | None = None) -> float:
    """r = 1 - (L*C - T_m - (p - m) * S_m) / ((L - p) * S_m), clipped; 1.0 when the budget is spent.

    p is the point where the prune runs (default m, right after merging; later on hybrid decoders).
    """
    m = len(ratios)
    p = m if point is None else point
    if p >= num_layers:
        return 0.0
    s = 1.0
    t = 0.0
    for ratio in ratios:
        s = s * (1.0 - ratio)
        t = t + s
    numerator = num_layers * cost - t - (p - m) * s
    if numerator <= 0:
        return 1.0
    r = 1.0 - numerator / ((num_layers - p) * s)
    return min(max(r, 0.0), 1.0)


def is_linear(layer) -> bool:
    """A hybrid decoder's linear-attention layer (Gated DeltaNet): no attention scores to prune by."""
    return getattr(layer, "block_type", None) == "linear_attention"


def capture_dense_inputs(model, inputs, layers, text_model):
    """Run the dense model as published (`dense`: Qwen2-VL / Qwen2.5-VL with the original M-RoPE positions) once,
    capturing layer 0's input embeddings, cos/sin, and deepstack inputs."""
    from framefusion import reduced

    captured = {}

    def layer0_hook(module, args, kwargs):
        captured["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        captured["cos_sin"] = tuple(t.detach().clone() for t in kwargs["position_embeddings"])

    def text_hook(module, args, kwargs):
        captured["visual_pos_masks"] = kwargs.get("visual_pos_masks")
        captured["deepstack"] = kwargs.get("deepstack_visual_embeds")

    handles = [layers[0].register_forward_pre_hook(layer0_hook, with_kwargs=True),
               text_model.register_forward_pre_hook(text_hook, with_kwargs=True)]
    try:
        with reduced(model, "dense"), torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [n, heads, d], cos/sin [n, r]: rotary on the first r channels (r < d: partial rotary)."""
    r = cos.shape[-1]
    turned, kept = x[..., :r], x[..., r:]
    half = r // 2
    rotated = torch.cat((-turned[..., half:], turned[..., :half]), dim=-1)
    return torch.cat((turned * cos[:, None, :] + rotated * sin[:, None, :], kept), dim=-1)


def project(attn, x, cos, sin):
    """q, k, v for rows x [n, D]: q [n, H, d], k/v [n, H_kv, d] after norms and rotary, and the output gate
    [n, H * d] of a gated attention (Qwen3.5: q_proj writes [query | gate] per head), else None."""
    d = attn.head_dim
    n = x.shape[0]
    q = attn.q_proj(x)
    gate = None
    heads = attn.config.num_attention_heads
    if q.shape[-1] == 2 * heads * d:
        q, gate = q.view(n, heads, 2 * d)[..., :d], q.view(n, heads, 2 * d)[..., d:].reshape(n, heads * d)
    q = q.reshape(n, -1, d)
    k = attn.k_proj(x).view(n, -1, d)
    v = attn.v_proj(x).view(n, -1, d)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return rope(q, cos, sin), rope(k, cos, sin), v, gate


def output(attn, context, gate):
    """o_proj of the attention context [n, H * d], gated first where the attention has a gate."""
    if gate is not None:
        context = context * torch.sigmoid(gate)
    return attn.o_proj(context)


def attend(attn, q, k, v, causal_offset: int, last_rows: int = 1):
    """Eager attention of queries q [nq, H, d] on keys k/v [nk, H_kv, d]; query i sees keys <= offset + i.

    Returns (context [nq, H * d] before o_proj, the probabilities of the last `last_rows` queries averaged over
    heads and those rows [nk]).
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * attn.scaling  # [H, nq, nk]
    nq, nk = q.shape[0], k.shape[0]
    allowed = torch.zeros(nq, nk, dtype=torch.bool)
    for i in range(nq):
        for j in range(nk):
            allowed[i, j] = j <= causal_offset + i
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("hqk,khd->qhd", probs.to(v.dtype), v).reshape(nq, -1)
    rows = min(last_rows, nq)
    return out, probs[:, nq - rows:, :].mean(dim=(0, 1))


def reference_prefill(model, inputs, layout, config, layers, text_model, final_norm, lm_head) -> ReferenceResult:
    """FrameFusion on one batch-1 prompt, step by step, with Python lists and loops.

    `config.importance_queries` must be set: the prune step ranks by the attention of that many last prompt rows.
    """
    if config.importance_queries is None:
        raise ValueError("the reference needs config.importance_queries set explicitly")
    captured = capture_dense_inputs(model, inputs, layers, text_model)
    hidden = captured["hidden"][0]  # [N, D]
    cos_all, sin_all = (t[0] for t in captured["cos_sin"])  # [N, d]
    num_layers = len(layers)
    seq_len = hidden.shape[0]
    vision_info = {}  # position -> (video, patch)
    for pos, video, patch in zip(layout.positions.tolist(), layout.video.tolist(), layout.patch.tolist()):
        if pos != seq_len - 1:  # the last prompt token is never reduced
            vision_info[pos] = (video, patch)

    alive = list(range(seq_len))
    rows = [hidden[i].clone() for i in range(seq_len)]
    state = {"merging_done": False, "pruning_done": False, "ratios": []}
    steps = []

    def predecessor(index):
        pos = alive[index]
        for back in range(index - 1, -1, -1):
            if vision_info.get(alive[back]) == vision_info[pos]:
                return back
        return None

    def cosine(a, b):
        a, b = a.double(), b.double()
        return float((a @ b) / (a.norm() * b.norm()))

    def do_merge(point):
        cap = budget_prune_ratio(num_layers, config.cost, state["ratios"])
        vision_idx = [i for i, pos in enumerate(alive) if pos in vision_info]
        n = len(vision_idx)
        sims = {}
        for i in vision_idx:
            p = predecessor(i)
            if p is not None:
                sims[i] = cosine(rows[i], rows[p])
        candidates = [i for i in vision_idx if i in sims and sims[i] >= config.similarity_lower_bound]
        ratio = len(candidates) / n if n else 0.0
        if ratio < cap:
            merged = set(candidates)
            state["ratios"].append(ratio)
            if ratio < config.ratio_lower_bound:
                state["merging_done"] = True
        else:
            k = math.floor(cap * n)
            ranked = sorted(candidates, key=lambda i: (-sims[i], alive[i]))
            merged = set(ranked[:k])
            state["merging_done"] = state["pruning_done"] = True
        # group: walk each (video, patch) chain in time order; a run of merged tokens joins the token before it
        groups = {}
        chains = {}
        for i in vision_idx:
            chains.setdefault(vision_info[alive[i]], []).append(i)
        for chain in chains.values():
            head = None
            for i in chain:
                if i in merged:
                    groups[head].append(i)
                else:
                    head = i
                    groups[head] = [i]
        for head, members in groups.items():
            if len(members) > 1:
                total = torch.zeros_like(rows[head], dtype=torch.float64)
                for i in members:
                    total += rows[i].double()
                rows[head] = (total / len(members)).to(rows[head].dtype)
        remove(merged)
        steps.append((point, "merge", len(merged)))

    def do_prune(point, importance_row):
        r = budget_prune_ratio(num_layers, config.cost, state["ratios"], point)
        vision_idx = [i for i, pos in enumerate(alive) if pos in vision_info]
        n = len(vision_idx)
        importance = {i: float(importance_row[i]) for i in vision_idx}
        ranked = sorted(vision_idx, key=lambda i: (-importance[i], alive[i]))
        k = round(n * (1 - r)) if r < 1.0 else 0
        if k > 0:
            keep = set(ranked[:k])
        else:
            keep, seen = set(), set()
            for i in ranked:
                video = vision_info[alive[i]][0]
                if video not in seen:
                    seen.add(video)
                    keep.add(i)
        drop = set(vision_idx) - keep
        remove(drop)
        state["merging_done"] = state["pruning_done"] = True
        steps.append((point, "prune", len(drop)))

    def remove(indices):
        for i in sorted(indices, reverse=True):
            del alive[i]
            del rows[i]

    def attends_before(point):  # after an attention layer, and before the last layer's FFN
        return 1 <= point < num_layers and not is_linear(layers[point - 1])

    def step(point, importance_row):
        if state["merging_done"] and state["pruning_done"]:
            return
        spent = budget_prune_ratio(num_layers, config.cost, state["ratios"]) >= 1.0
        if state["merging_done"] or (point >= 1 and spent):
            if attends_before(point):
                do_prune(point, importance_row)
            else:
                state["merging_done"] = True  # a prune waits for the next attention layer (hybrid decoders)
            return
        do_merge(point)

    step(0, None)
    kv_vision, caches = [], []
    visual_mask = captured.get("visual_pos_masks")
    deepstack = captured.get("deepstack")
    with torch.no_grad():
        for l, layer in enumerate(layers):
            h = torch.stack(rows)
            kv_vision.append(sorted(pos for pos in alive if pos in vision_info))
            x = layer.input_layernorm(h)
            if is_linear(layer):  # the model's own recurrent mixer over the alive rows, in order
                caches.append(None)
                mixed, importance_row = layer.linear_attn(hidden_states=x[None], cache=None)[0], None
            else:
                q, k, v, gate = project(layer.self_attn, x, cos_all[alive], sin_all[alive])
                caches.append((k, v))
                context, importance_row = attend(layer.self_attn, q, k, v, causal_offset=0,
                                                 last_rows=config.importance_queries)
                mixed = output(layer.self_attn, context, gate)
            h = h + mixed
            rows = [h[i] for i in range(h.shape[0])]
            step(l + 1, importance_row)
            h = torch.stack(rows)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            if deepstack is not None and l < len(deepstack):
                mask = visual_mask[0]
                feature_row = {pos: r for r, pos in enumerate(torch.nonzero(mask).flatten().tolist())}
                for i, pos in enumerate(alive):
                    if pos in feature_row:
                        h[i] = h[i] + deepstack[l][feature_row[pos]]
            rows = [h[i] for i in range(h.shape[0])]
        logits = lm_head(final_norm(torch.stack(rows)))
    return ReferenceResult(kv_vision, list(alive), logits, steps, caches)


def reference_greedy_decode(result: ReferenceResult, first_token: int, steps: int, cos_sin_full, layers,
                            embed, final_norm, lm_head, prompt_len: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding on the reference's per-layer caches; decode positions continue the dense prompt's."""
    cos_full, sin_full = (t[0] for t in cos_sin_full)
    caches = [(k.clone(), v.clone()) for k, v in result.caches]
    tokens, step_logits = [first_token], []
    with torch.no_grad():
        for i in range(steps):
            pos = prompt_len + i
            h = embed(torch.tensor([tokens[-1]]))  # [1, D]
            for l, layer in enumerate(layers):
                x = layer.input_layernorm(h)
                q, k, v, gate = project(layer.self_attn, x, cos_full[pos:pos + 1], sin_full[pos:pos + 1])
                k_all = torch.cat([caches[l][0], k])
                v_all = torch.cat([caches[l][1], v])
                caches[l] = (k_all, v_all)
                context, _ = attend(layer.self_attn, q, k_all, v_all, causal_offset=k_all.shape[0] - 1)
                h = h + output(layer.self_attn, context, gate)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            logits = lm_head(final_norm(h))[0]
            step_logits.append(logits)
            tokens.append(int(logits.argmax()))
    return tokens, step_logits
