"""Qwen2-VL and Qwen2.5-VL M-RoPE positions as the published models use them.

The published models (the original Qwen code, and transformers 4.x, the FrameFusion authors' environment) start
the text after an image or video at that block's largest position + 1. transformers 5.x (seen in 5.19 to 5.24)
starts it at `block start + max(h, w) / spatial_merge_size` instead, which differs whenever a video has more
temporal steps than rows or columns (Qwen2.5-VL: whenever its temporal positions, spaced by the frame interval,
run past them): the question then takes positions inside the video's temporal range. FrameFusion's prune ranks
video tokens by exactly these text rows' attention.

`install_published_positions` wraps the model's `get_rope_index` so that every later text token moves by the
difference, and `rope_deltas` (decoding continues from them) follows. Whether a transformers release needs it is
decided by computing both rules on a probe prompt, not by its version: where they agree (transformers 4.x,
Qwen3-VL and Qwen3.5, whose per-frame vision spans make both rules coincide) nothing is installed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from framefusion.core.patches import PatchStack


def vision_runs(input_ids: torch.Tensor, vision_token_ids: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of one vision placeholder id in a row of input ids [n]."""
    n = input_ids.numel()
    if n == 0:
        return []
    change = torch.ones(n, dtype=torch.bool, device=input_ids.device)
    change[1:] = input_ids[1:] != input_ids[:-1]  # [n] a run starts here
    run_starts = torch.nonzero(change).flatten()
    vision = torch.isin(input_ids, torch.tensor(list(vision_token_ids), device=input_ids.device))
    starts = torch.nonzero(change & vision).flatten()
    following = torch.searchsorted(run_starts, starts, right=True)  # the run after each vision run
    ends = torch.cat([run_starts, torch.tensor([n], device=input_ids.device)])[following]
    return list(zip(starts.tolist(), ends.tolist()))


def published_positions(position_ids: torch.Tensor, deltas: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None, vision_token_ids: Sequence[int]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 5.x's (position_ids [3, B, N], rope_deltas [B, 1]) moved to the published rule: after each
    vision block the next token starts at the block's largest position + 1; later tokens move with it."""
    fixed = position_ids.clone()
    fixed_deltas = deltas.clone()
    for row in range(input_ids.shape[0]):
        attended = torch.ones_like(input_ids[row], dtype=torch.bool) if attention_mask is None else \
            attention_mask[row].bool()
        index = torch.nonzero(attended).flatten().to(fixed.device)  # [n] attended positions
        positions = fixed[:, row, index]  # [3, n]
        for start, end in vision_runs(input_ids[row][attended.to(input_ids.device)], vision_token_ids):
            if end >= positions.shape[1]:
                break
            shift = positions[:, start:end].max() + 1 - positions[:, end].min()
            positions[:, end:] += shift
        stock_max = fixed[:, row, index].max()
        fixed[:, row, index] = positions
        fixed_deltas[row] += (positions.max() - stock_max).to(fixed_deltas.device)
    return fixed, fixed_deltas


def published_rope_index(stock: Callable, vision_token_ids: Sequence[int]) -> Callable:
    """`get_rope_index` with the published rule on top of the stock one (same arguments, same outputs)."""
    signature = inspect.signature(stock)

    @functools.wraps(stock)
    def get_rope_index(*args: Any, **kwargs: Any):
        position_ids, deltas = stock(*args, **kwargs)
        arguments = signature.bind_partial(*args, **kwargs).arguments
        return published_positions(position_ids, deltas, arguments["input_ids"], arguments.get("attention_mask"),
                                   vision_token_ids)

    return get_rope_index


def stock_rule_differs(stock: Callable, probe: dict[str, Any], vision_token_ids: Sequence[int]) -> bool:
    """Whether the stock `get_rope_index` departs from the published rule on a probe prompt whose video has more
    temporal steps than rows and columns."""
    accepted = inspect.signature(stock).parameters
    position_ids, deltas = stock(**{key: value for key, value in probe.items() if key in accepted})
    fixed, _ = published_positions(position_ids, deltas, probe["input_ids"], None, vision_token_ids)
    return not torch.equal(fixed, position_ids)


def install_published_positions(module: torch.nn.Module, patches: PatchStack, probe: dict[str, Any],
                                vision_token_ids: Sequence[int]) -> bool:
    """Give `module` (a Qwen2-VL-style model with get_rope_index) the published rule where its transformers
    release departs from it; returns whether a wrapper was installed."""
    stock = module.get_rope_index
    if not stock_rule_differs(stock, probe, vision_token_ids):
        return False
    patches.wrap_method(module, "get_rope_index", lambda original: published_rope_index(original, vision_token_ids),
                        "published M-RoPE positions")
    return True
