"""Small pieces of model plumbing: recording q/k for one call, marking and trimming a reduced KV cache, masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class OutputRecorder:
    """Context manager keeping the outputs of some submodules for one call."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "OutputRecorder":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._keeper(name)))
        return self

    def _keeper(self, name: str) -> Callable:
        def keep(_module, _args, output):
            self.outputs[name] = output

        return keep

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass
class ReducedCacheInfo:
    """Marks a KV cache filled by a reducing prefill: layer l holds `dense_length - missing[l]` prompt tokens."""

    missing: list[int]  # prompt tokens absent from each layer's cache
    true_length: Callable[[int], int]  # the cache's own per-layer length


def mark_reduced_cache(cache, dense_length: int, kv_lengths: list[int], linear: Sequence[bool] = ()) -> None:
    """Make `cache.get_seq_length` report dense lengths so that later positions continue the dense model's.

    linear: per layer, True for linear-attention layers, whose cache holds a fixed-size state; a hybrid cache
    answers get_seq_length for such a layer with its first attention layer's length, so that layer's count is used.
    """
    if getattr(cache, "_framefusion", None) is not None or not hasattr(cache, "get_seq_length"):
        return
    true_length = cache.get_seq_length
    missing = [dense_length - kv for kv in kv_lengths]
    first_attention = next((i for i, is_linear in enumerate(linear) if not is_linear), 0)
    answered_by = [first_attention if i < len(linear) and linear[i] else i for i in range(len(missing))]

    def get_seq_length(layer_idx: int = 0) -> int:
        extra = missing[answered_by[layer_idx]] if 0 <= layer_idx < len(missing) else 0
        return true_length(layer_idx) + extra

    cache.get_seq_length = get_seq_length
    cache._framefusion = ReducedCacheInfo(missing, true_length)


def continuation_mask(query_length: int, past_length: int, implementation: str, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor | None:
    """Attention mask for new tokens after a reduced prompt: all cached tokens, causal among the new ones.

    Returns None where the implementation needs none (one new token, or flash attention's bottom-right causal).
    """
    if query_length == 1 or "flash" in implementation:
        return None
    new = torch.arange(query_length, device=device)
    keys = torch.arange(past_length + query_length, device=device)
    allowed = keys[None, :] <= (past_length + new)[:, None]  # [q, kv]
    return as_attention_mask(allowed[None, None], implementation, dtype)


def as_attention_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean [B, 1, q, kv] mask (True = may attend) in the form the attention implementation takes."""
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                        torch.finfo(dtype).min)
    return allowed


def keep_cache_rows(cache, rows: torch.Tensor | Sequence[torch.Tensor | None]) -> None:
    """Keep only the given rows of the cached keys and values (others are evicted): rows [n] for every layer, or
    one entry per layer (None: that layer keeps all)."""
    per_layer = [rows] * len(cache.layers) if isinstance(rows, torch.Tensor) else list(rows)
    for layer, kept in zip(cache.layers, per_layer):
        if kept is None or getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
            continue
        index = kept.to(layer.keys.device)
        layer.keys = layer.keys.index_select(-2, index)
        layer.values = layer.values.index_select(-2, index)
