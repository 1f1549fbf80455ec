"""What the engine, the model-family adapters and the reduction methods agree on, and nothing else.

The engine (core/engine.py) runs any `Reducer` inside any model a `FamilyAdapter` describes; the adapters
(framefusion/adapters) implement FamilyAdapter, the methods (framefusion/methods) implement Reducer and hand the
engine a `ReducerFactory`. This module imports nothing above core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from framefusion.core.layout import TokenLayout
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import ReductionStats


@dataclass
class QueryKeys:
    """The last query rows of the prompt and all keys a layer's attention used (both after rotary embedding)."""

    queries: torch.Tensor  # [q, H, d], the last q alive positions
    keys: torch.Tensor  # [H_kv, n_alive, d]
    scaling: float


class Reducer:
    """A token-reduction policy for one prefill (batch size 1); every method's reducer derives from it.

    Point 0 is before layer 0's attention, point l + 1 after layer l's attention (decoder_stack: which points
    follow an attention layer). The required members are abstract; the optional ones have defaults here.
    """

    alive: torch.Tensor  # [n_alive] sequence positions still present
    version: int  # changes whenever `alive` does
    finished: bool  # True once no further step can happen
    query_rows: int = 1  # last prompt rows whose attention a step that `prunes_at` receives (QueryKeys.queries)
    # Rows of the KV cache each layer keeps once the prefill ends: [n] for every layer, or one entry per layer
    # (None: that layer keeps all); None: keep everything.
    kv_keep: torch.Tensor | list[torch.Tensor | None] | None = None

    def prunes_at(self, point: int) -> bool:
        """Whether the step at `point` needs the preceding layer's attention (the engine then records q and k)."""
        raise NotImplementedError

    def step(self, point: int, hidden: torch.Tensor, attention: QueryKeys | None = None) -> torch.Tensor:
        """Run the step due at `point` on hidden [1, n_alive, D]; returns the hidden states of the alive tokens."""
        raise NotImplementedError

    def stats(self) -> ReductionStats:
        """What this prefill did."""
        raise NotImplementedError

    def prefill_attention_mask(self, implementation: str, dtype: torch.dtype, device: torch.device) -> Any:
        """The mask every layer's prefill attention uses over the alive tokens, in the implementation's form, or
        None to keep the model's own (methods that change attention instead of removing tokens override it)."""
        return None


# make_reducer(layout, decoder stack, device) -> a Reducer for one prefill
ReducerFactory = Callable[[TokenLayout, DecoderStack, torch.device], Reducer]


class FamilyAdapter(Protocol):
    """What the engine needs to know about a model family (framefusion/adapters/base.py implements it)."""

    name: str
    model_types: tuple[str, ...]
    importance_queries: int  # FrameFusion's default query rows for prune importance

    def multimodal_module(self, model: nn.Module) -> nn.Module:
        """The module whose forward receives input_ids and the processor's grid metadata."""

    def text_model(self, model: nn.Module) -> nn.Module:
        """The LLM's decoder stack (holds `.layers` and `.config`)."""

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The LLM's decoder layers (pre-norm blocks the engine can split at the FFN)."""

    def mixer(self, layer: nn.Module) -> nn.Module:
        """The layer's token mixer (attention, or linear attention on hybrid decoders)."""

    def is_linear(self, layer: nn.Module) -> bool:
        """Whether the layer mixes tokens by linear attention."""

    def run_mixer(self, layer: nn.Module, normed: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The token mixer's output for the normed hidden states."""

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The video metadata the layout needs, from forward or get_video_features arguments."""

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor,
                     video: dict[str, Any] | None) -> TokenLayout | None:
        """Layout of the video tokens of a batch-1 prompt, or None when it has none."""

    def install_extras(self, engine: Any, model: nn.Module, patches: Any) -> None:
        """Family-specific patches, made on the model's PatchStack."""

    def install_positions(self, model: nn.Module, patches: Any) -> None:
        """The published model's positions where transformers departs from them, on the model's PatchStack."""

    def query_keys(self, attention: nn.Module, q_out: torch.Tensor, k_out: torch.Tensor,
                   position_embeddings: tuple[torch.Tensor, torch.Tensor], rows: int = 1) -> QueryKeys:
        """The last `rows` query rows and all keys, after q/k norms and rotary, from q_proj/k_proj outputs."""
