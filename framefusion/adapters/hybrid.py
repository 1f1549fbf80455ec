"""Hybrid decoders (Qwen3.5's layers, also under MiniCPM-V 4.6): Gated DeltaNet linear attention in most
layers, gated full attention every few layers (`config.layer_types`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NOT_FOR_LINEAR = ("position_embeddings", "position_ids")  # the stock layer does not hand these to linear attention


class HybridDecoderMixin:
    """Token mixers of Qwen3.5-style layers: `linear_attn` or `self_attn`, by the layer's `block_type`."""

    def is_linear(self, layer: nn.Module) -> bool:
        """Whether the layer mixes tokens by linear attention (a recurrent state, no attention scores)."""
        return getattr(layer, "block_type", None) == "linear_attention"

    def mixer(self, layer: nn.Module) -> nn.Module:
        """The layer's linear attention or attention module."""
        mixer = getattr(layer, "linear_attn" if self.is_linear(layer) else "self_attn", None)
        if mixer is None:
            raise TypeError(f"{self.name}: decoder layer {type(layer).__name__} ({getattr(layer, 'block_type', '?')}) "
                            "has no token mixer the engine knows")
        return mixer

    def run_mixer(self, layer: nn.Module, normed: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """Call the mixer as the stock Qwen3.5 layer does (linear attention gets no positions)."""
        if self.is_linear(layer):
            return layer.linear_attn(hidden_states=normed, **{k: v for k, v in kwargs.items() if k not in NOT_FOR_LINEAR})
        return layer.self_attn(hidden_states=normed, **kwargs)[0]

    def query_heads(self, attention: nn.Module, q_rows: torch.Tensor) -> torch.Tensor:
        """Qwen3.5's q_proj writes each head as [query | output gate]: keep the query halves [q, H, d]."""
        head_dim = attention.head_dim
        return q_rows.reshape(q_rows.shape[0], -1, 2 * head_dim)[..., :head_dim]
