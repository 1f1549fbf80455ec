"""StreamingLLM (arXiv 2309.17453) as the FrameFusion paper runs it: an attention sink of the first 8 prompt
tokens plus a window of the W most recent tokens.

Prefill: query i attends to key j only if j < 8 (the sink) or i - W < j <= i (the window). Decode starts from
a KV cache holding, in every layer, the sink and the last W prompt tokens; everything else (video, text, images
in between) is evicted once the prefill ends. Decode positions continue the dense prompt's, and generated tokens
are appended to the cache like in every other method (the window does not roll during decoding).

The budget is the KV-cache length at decode, which is also the attention span in prefill. It is matched on the
video tokens: W is the largest window whose union with the sink holds round(budget * N_v) video tokens (it
covers the question text at the prompt's end, and budget 1 is the dense model).

The banded prefill mask is [N, N]: inherent to the method with sdpa / eager attention masks. flash attention has
no way to express a sink next to a sliding window, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framefusion.adapters import adapter_for, decoder_stack
from framefusion.core.budget import layer_flops
from framefusion.core.contract import Reducer
from framefusion.core.hooks import as_attention_mask
from framefusion.core.layout import TokenLayout
from framefusion.core.stats import KEPT, PRUNED, ReductionStats, StepRecord
from framefusion.methods.common import check_budget, layout_stats
from framefusion.methods.install import install_reducer

SINK_TOKENS = 8  # the paper's attention sink size (appendix 7)


def choose_window(vision_positions: torch.Tensor, seq_len: int, budget: float, sink: int = SINK_TOKENS) -> int:
    """W: the largest window (counted back from the prompt's end) whose union with the sink holds
    round(budget * N_v) of the video tokens at vision_positions [N_v] (ascending), or as few as possible.

    The window starts right after the last video token it leaves out, so it takes the text before its first
    video token (e.g. that frame's timestamp) and all the text at the prompt's end; budget 1 keeps everything.
    """
    n_v = vision_positions.numel()
    outside_sink = vision_positions[vision_positions >= sink]
    needed = min(max(round(budget * n_v) - (n_v - outside_sink.numel()), 0), outside_sink.numel())
    excluded = outside_sink.numel() - needed  # video tokens after the sink that the window leaves out
    start = int(outside_sink[excluded - 1]) + 1 if excluded > 0 else sink
    return max(seq_len - max(start, sink), 1)


def span_positions(seq_len: int, window: int, sink: int = SINK_TOKENS) -> torch.Tensor:
    """Ascending positions [n] of the prompt tokens in the decode KV cache: the sink and the last `window`."""
    positions = torch.arange(seq_len)
    return positions[(positions < sink) | (positions >= seq_len - window)]


def sink_window_allowed(seq_len: int, window: int, sink: int = SINK_TOKENS,
                        device: torch.device | None = None) -> torch.Tensor:
    """[N, N] bool: query i may attend key j iff j <= i and (j < sink or i - j < window)."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    return (j <= i) & ((j < sink) | (i - j < window))


@dataclass
class StreamingStats(ReductionStats):
    """ReductionStats of a StreamingLLM prefill: every layer's KV cache holds the same sink + window tokens.

    Unlike the other methods, text and image tokens outside the span are evicted too, and the prefill itself
    runs all seq_len tokens through every layer (only attention is limited to the span).
    """

    sink: int = SINK_TOKENS
    window: int = 0

    def tokens_per_layer(self) -> list[int]:
        """All tokens in each layer's KV cache at decode: the sink and the window."""
        return [int(span_positions(self.seq_len, self.window, self.sink).numel())] * self.num_layers

    def ffn_tokens_per_layer(self) -> list[int]:
        """All prompt tokens go through every layer's FFN in prefill."""
        return [self.seq_len] * self.num_layers

    @property
    def prefill_ratio(self) -> float:
        """Every video token runs through every layer in prefill (only attention is limited to the span)."""
        return 1.0

    def ideal_speedup(self, hidden_size: int, ffn_size: int) -> float:
        """Dense over StreamingLLM prefill FLOPs by the paper's cost model, attention limited to the span."""
        n = self.seq_len
        dense = layer_flops(n, n, hidden_size, ffn_size)
        return dense / layer_flops(n, n, hidden_size, ffn_size, span=self.sink + self.window)

    def to_dict(self) -> dict:
        """ReductionStats.to_dict plus the sink and window sizes."""
        return {**super().to_dict(), "sink": self.sink, "window": self.window}


class StreamingReduction(Reducer):
    """The Reducer of one StreamingLLM prefill: no token leaves the prefill; the mask and the cache change."""

    def __init__(self, layout: TokenLayout, num_layers: int, device: torch.device, budget: float,
                 sink: int = SINK_TOKENS):
        self.layout = layout
        self.num_layers = num_layers
        self.sink = sink
        self.window = choose_window(layout.positions, layout.seq_len, budget, sink)
        self.alive = torch.arange(layout.seq_len, device=device)
        self.version = 0
        self.finished = True  # no token step: the engine runs every layer as it is
        self.query_rows = 0  # never asks for attention rows
        dense = layout.seq_len <= sink + self.window
        self.kv_keep = None if dense else span_positions(layout.seq_len, self.window, sink).to(device)

    def prunes_at(self, point: int) -> bool:
        """StreamingLLM never needs attention scores."""
        return False

    def step(self, point: int, hidden: torch.Tensor, attention=None) -> torch.Tensor:
        """No token is removed during prefill."""
        return hidden

    def prefill_attention_mask(self, implementation: str, dtype: torch.dtype,
                               device: torch.device) -> torch.Tensor | None:
        """[1, 1, N, N] sink + window mask for every layer (None when the span covers the whole prompt)."""
        if self.kv_keep is None:
            return None
        allowed = sink_window_allowed(self.layout.seq_len, self.window, self.sink, device)
        return as_attention_mask(allowed[None, None], implementation, dtype)

    def stats(self) -> StreamingStats:
        """Video tokens outside the span count as pruned before layer 0: no layer's cache holds them at decode."""
        n_v = self.layout.num_vision_tokens
        span = span_positions(self.layout.seq_len, self.window, self.sink)
        evicted = ~torch.isin(self.layout.positions, span)  # [N_v]
        removed_at = torch.where(evicted, 0, -1)
        removed_by = torch.where(evicted, PRUNED, KEPT)
        removed = int(evicted.sum())
        steps = [StepRecord(0, "evict", n_v, removed, removed / n_v if n_v else 0.0)] if removed else []
        return layout_stats(self.layout, self.num_layers, "streamingllm", removed_at, removed_by, steps,
                            cls=StreamingStats, sink=self.sink, window=self.window)


def apply_streamingllm(model: nn.Module, budget: float = 0.3, sink: int = SINK_TOKENS) -> nn.Module:
    """Install StreamingLLM in place: sink + window attention in prefill, sink + window KV cache at decode."""
    check_budget(budget)
    implementation = adapter_for(model).text_model(model).config._attn_implementation
    if "flash" in implementation:
        raise ValueError(f"streamingllm needs sdpa or eager attention, not {implementation}: flash attention cannot "
                         "mask a sink and a window together")
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise ValueError(f"sink={sink!r} is out of range: expected an integer >= 0")
    if decoder_stack(model).hybrid:
        raise ValueError(f"streamingllm is not defined on {adapter_for(model).name}: it limits every layer's "
                         "attention span and KV cache to a sink and a window, but this model's linear-attention "
                         "layers carry a fixed-size recurrent state over every token, with no window to cut")

    def make_reducer(layout, stack, device):
        return StreamingReduction(layout, stack.num_layers, device, budget, sink)

    return install_reducer(model, make_reducer, f"StreamingLLM(budget={budget}, sink={sink})")
