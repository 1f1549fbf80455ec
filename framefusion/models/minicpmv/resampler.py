"""MiniCPM-V 2.6's perceiver resampler: learned queries cross-attend to one slice's vision features.

One attention layer (torch's nn.MultiheadAttention, `hidden // 128` heads) with `query_num` learned queries. The
keys are the slice's features (kv_proj, then ln_kv) plus a fixed 2-D sin-cos position embedding of each patch's
(row, col); the values are the features without it. Parameter names are the original's (query, kv_proj, attn,
ln_q, ln_kv, ln_post, proj), so the checkpoint's `resampler.*` tensors load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

LAYER_NORM_EPS = 1e-6
SINCOS_BASE = 10000.0


def sincos_1d(positions: torch.Tensor, channels: int) -> torch.Tensor:
    """positions [...] -> [..., channels]: sin of positions times `channels // 2` frequencies, then cos of them."""
    frequencies = torch.arange(channels // 2, dtype=torch.float32) / (channels / 2.0)
    frequencies = 1.0 / SINCOS_BASE**frequencies  # [channels // 2]
    angles = positions.to(torch.float32)[..., None] * frequencies  # [..., channels // 2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(rows: int, cols: int, channels: int) -> torch.Tensor:
    """[rows * cols, channels] row-major: the column's 1-D embedding in the first half, the row's in the second."""
    if channels % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs a channel count divisible by 4, got {channels}")
    row = torch.arange(rows).repeat_interleave(cols)  # [rows * cols]
    col = torch.arange(cols).repeat(rows)
    return torch.cat([sincos_1d(col, channels // 2), sincos_1d(row, channels // 2)], dim=-1)


class Resampler(nn.Module):
    """Slices' vision features [B, h * w, vision_dim] -> [B, query_num, embed_dim] LLM tokens."""

    def __init__(self, query_num: int, embed_dim: int, num_heads: int, vision_dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(query_num, embed_dim))
        self.kv_proj = nn.Linear(vision_dim, embed_dim, bias=False) if vision_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.ln_post = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.proj = nn.Parameter(torch.zeros(embed_dim, embed_dim))
        self._positions: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def position_embedding(self, rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[rows * cols, embed_dim] key position embedding of a rows x cols patch grid (cached per grid)."""
        key = (rows, cols, device, dtype)
        if key not in self._positions:
            self._positions[key] = sincos_2d(rows, cols, self.query.shape[-1]).to(device, dtype)
        return self._positions[key]

    def forward(self, features: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """features [B, rows * cols, vision_dim] of B slices of one size -> [B, query_num, embed_dim]."""
        values = self.ln_kv(self.kv_proj(features))  # [B, L, D]
        keys = values + self.position_embedding(rows, cols, values.device, values.dtype)
        queries = self.ln_q(self.query).expand(features.shape[0], -1, -1)  # [B, Q, D]
        out = self.attn(queries, keys, values, need_weights=False)[0]  # [B, Q, D]
        return self.ln_post(out) @ self.proj
