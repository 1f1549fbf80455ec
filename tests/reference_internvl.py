"""Slow, obviously correct references of InternVL2.5's original math, computed straight from the checkpoint's
original tensors (loops over heads and patches): InternLM2's decoder with its fused wqkv, and InternViT + pixel
shuffle + mlp1. The native model (LlamaModel, InternVLVisionModel) must agree with them."""

from __future__ import annotations

import math

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def wqkv_heads(fused_rows: torch.Tensor, heads: int, kv_heads: int, head_dim: int):
    """The fused wqkv output [n, (H + 2 H_kv) d] read head by head: per key/value head kv its `groups` query heads,
    then its key head, then its value head (InternLM2's layout). Returns lists of [n, d] per head."""
    groups = heads // kv_heads
    q, k, v = [None] * heads, [], []
    for kv in range(kv_heads):
        base = kv * (groups + 2)
        for g in range(groups):
            q[kv * groups + g] = fused_rows[:, (base + g) * head_dim:(base + g + 1) * head_dim]
        k.append(fused_rows[:, (base + groups) * head_dim:(base + groups + 1) * head_dim])
        v.append(fused_rows[:, (base + groups + 1) * head_dim:(base + groups + 2) * head_dim])
    return q, k, v


def rotate(x: torch.Tensor, position: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding of x [n, d] at integer positions [n] (halves rotated, as InternLM2 / Llama)."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angle = position[:, None].float() * inv[None, :]
    cos, sin = torch.cat([angle.cos(), angle.cos()], -1), torch.cat([angle.sin(), angle.sin()], -1)
    half = d // 2
    turned = torch.cat([-x[:, half:], x[:, :half]], -1)
    return x * cos + turned * sin


def internlm2_logits(t: dict[str, torch.Tensor], llm: dict, ids: list[int]) -> torch.Tensor:
    """InternLM2 (remote-code weights) on token ids: [n, vocab] logits, causal attention head by head."""
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    d = llm["hidden_size"] // heads
    eps, theta = llm["rms_norm_eps"], llm["rope_theta"]
    p = "language_model.model."
    x = t[p + "tok_embeddings.weight"][torch.tensor(ids)]
    n = x.shape[0]
    position = torch.arange(n)
    for i in range(llm["num_hidden_layers"]):
        layer = f"{p}layers.{i}."
        h = rms_norm(x, t[layer + "attention_norm.weight"], eps)
        q, k, v = wqkv_heads(h @ t[layer + "attention.wqkv.weight"].T, heads, kv_heads, d)
        outputs = []
        for head in range(heads):
            kv = head // (heads // kv_heads)
            scores = rotate(q[head], position, theta) @ rotate(k[kv], position, theta).T / math.sqrt(d)
            scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
            outputs.append(torch.softmax(scores, -1) @ v[kv])
        x = x + torch.cat(outputs, -1) @ t[layer + "attention.wo.weight"].T
        h = rms_norm(x, t[layer + "ffn_norm.weight"], eps)
        gate = torch.nn.functional.silu(h @ t[layer + "feed_forward.w1.weight"].T)
        x = x + (gate * (h @ t[layer + "feed_forward.w3.weight"].T)) @ t[layer + "feed_forward.w2.weight"].T
    return rms_norm(x, t[p + "norm.weight"], eps) @ t["language_model.output.weight"].T


def shuffle_reference(grid: torch.Tensor, step: int = 2, version: str = "v2") -> torch.Tensor:
    """InternVL's pixel shuffle by loops: token (i, j) = patches (step i + r, step j + c), r outer, c inner; "v1"
    leaves the token grid transposed. grid [side, side, C] -> [side / step, side / step, step^2 C]."""
    side = grid.shape[0] // step
    out = torch.empty(side, side, step * step * grid.shape[-1])
    for i in range(side):
        for j in range(side):
            parts = [grid[step * i + r, step * j + c] for r in range(step) for c in range(step)]
            out[i, j] = torch.cat(parts)
    return out if version == "v2" else out.transpose(0, 1)


def internvit_features(t: dict[str, torch.Tensor], raw: dict, pixels: torch.Tensor) -> torch.Tensor:
    """InternViT + pixel shuffle + mlp1 (remote-code weights) on tiles [n, 3, S, S]: [n, tokens, D_llm]."""
    vision = raw["vision_config"]
    heads, eps = vision["num_attention_heads"], vision["layer_norm_eps"]
    width = vision["hidden_size"]
    d = width // heads
    p = "vision_model."
    patches = torch.nn.functional.conv2d(pixels, t[p + "embeddings.patch_embedding.weight"],
                                         t[p + "embeddings.patch_embedding.bias"], stride=vision["patch_size"])
    patches = patches.flatten(2).transpose(1, 2)  # [n, P, C]
    cls = t[p + "embeddings.class_embedding"].expand(patches.shape[0], 1, width)
    x = torch.cat([cls, patches], 1) + t[p + "embeddings.position_embedding"]
    rms = vision["norm_type"] == "rms_norm"
    for i in range(vision["num_hidden_layers"]):
        layer = f"{p}encoder.layers.{i}."

        def norm(h, name):
            if rms:
                return rms_norm(h, t[layer + name + ".weight"], eps)
            return layer_norm(h, t[layer + name + ".weight"], t[layer + name + ".bias"], eps)

        h = norm(x, "norm1")
        qkv = h @ t[layer + "attn.qkv.weight"].T
        if layer + "attn.qkv.bias" in t:
            qkv = qkv + t[layer + "attn.qkv.bias"]
        q, k, v = qkv.split(width, -1)
        if vision["qk_normalization"]:
            q, k = rms_norm(q, t[layer + "attn.q_norm.weight"], eps), rms_norm(k, t[layer + "attn.k_norm.weight"], eps)
        outputs = []
        for head in range(heads):
            cut = slice(head * d, (head + 1) * d)
            outputs.append(torch.softmax(q[..., cut] @ k[..., cut].transpose(1, 2) / math.sqrt(d), -1) @ v[..., cut])
        attended = torch.cat(outputs, -1) @ t[layer + "attn.proj.weight"].T + t[layer + "attn.proj.bias"]
        x = x + attended * t[layer + "ls1"]
        h = norm(x, "norm2")
        h = torch.nn.functional.gelu(h @ t[layer + "mlp.fc1.weight"].T + t[layer + "mlp.fc1.bias"])
        x = x + (h @ t[layer + "mlp.fc2.weight"].T + t[layer + "mlp.fc2.bias"]) * t[layer + "ls2"]
    x = x[:, 1:]
    side = math.isqrt(x.shape[1])
    tokens = torch.stack([shuffle_reference(tile.reshape(side, side, -1), version=raw["ps_version"]).flatten(0, 1)
                          for tile in x])
    h = layer_norm(tokens, t["mlp1.0.weight"], t["mlp1.0.bias"], 1e-5)
    h = torch.nn.functional.gelu(h @ t["mlp1.1.weight"].T + t["mlp1.1.bias"])
    return h @ t["mlp1.3.weight"].T + t["mlp1.3.bias"]
