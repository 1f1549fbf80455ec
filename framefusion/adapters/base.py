"""What the engine needs to know about a model family, with defaults shared by HF's pre-norm decoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framefusion.core.contract import QueryKeys
from framefusion.core.layout import TokenLayout
from framefusion.core.patches import PatchStack

LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp")  # besides the token mixer


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotary helper: (x1, x2) -> (-x2, x1) on the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the first cos.shape[-1] channels of x (all of them, or a partial rotary's share)."""
    rotary = cos.shape[-1]
    turned, kept = x[..., :rotary], x[..., rotary:]
    return torch.cat((turned * cos + rotate_half(turned) * sin, kept), dim=-1)


class FamilyAdapter:
    """Where the decoder layers are and how to read (video, frame, patch) of every prompt token (implements
    core.contract.FamilyAdapter)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    importance_queries: int = 1  # FrameFusion's default query rows for prune importance (the authors' code: 1)
    similarity_threshold: float = 0.6  # FrameFusion's S_threshold when neither given nor calibrated
    threshold_source: str = "no published value (run framefusion calibrate for this model)"

    def multimodal_module(self, model: nn.Module) -> nn.Module:
        """The module whose forward receives input_ids and the processor's grid metadata."""
        if hasattr(model, "language_model") and not hasattr(model, "lm_head"):
            return model
        return model.model

    def text_model(self, model: nn.Module) -> nn.Module:
        """The LLM's decoder stack."""
        return self.multimodal_module(model).language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The LLM's decoder layers, checked to be pre-norm blocks the engine can split at the FFN."""
        layers = self.text_model(model).layers
        for layer in layers:
            for part in LAYER_PARTS:
                if not hasattr(layer, part):
                    raise TypeError(f"{self.name}: decoder layer {type(layer).__name__} has no `{part}`")
            self.mixer(layer)
        return layers

    def mixer(self, layer: nn.Module) -> nn.Module:
        """The layer's token mixer: its attention (hybrid families: attention or linear attention)."""
        if not hasattr(layer, "self_attn"):
            raise TypeError(f"{self.name}: decoder layer {type(layer).__name__} has no `self_attn`")
        return layer.self_attn

    def is_linear(self, layer: nn.Module) -> bool:
        """Whether the layer mixes tokens by linear attention (a recurrent state, no attention scores)."""
        return False

    def run_mixer(self, layer: nn.Module, normed: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The token mixer's output for the normed hidden states, called as the stock layer calls it."""
        return layer.self_attn(hidden_states=normed, **kwargs)[0]

    def video_inputs(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The video metadata the layout needs, read from forward or `get_video_features` arguments.

        `generate` encodes videos before the prefill and drops their grids from the forward's arguments, so
        the engine also reads them where the features were made and passes them along with the features.
        """
        return None

    def token_layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict[str, Any] | None) -> TokenLayout | None:
        """Layout of the video tokens of a batch-1 prompt, or None when it has none."""
        raise NotImplementedError

    def vision_probe(self, model: nn.Module, patches: PatchStack):
        """A SaliencyProbe of the vision encoder's attention (adapters/vision_attention.py), its hooks on
        `patches`, or None where this family has none."""
        return None

    def install_extras(self, engine, model: nn.Module, patches: PatchStack) -> None:
        """Family-specific patches (e.g. Qwen3-VL deepstack), made on the model's patch stack."""

    def install_positions(self, model: nn.Module, patches: PatchStack) -> None:
        """Make the model's positions those of the published model where transformers departs from them (every
        method installs this, dense included; core/positions.py)."""

    def query_keys(self, attention: nn.Module, q_out: torch.Tensor, k_out: torch.Tensor,
                   position_embeddings: tuple[torch.Tensor, torch.Tensor], rows: int = 1) -> QueryKeys:
        """Rebuild the last `rows` query rows and all keys, after q/k norms and rotary, from q_proj/k_proj outputs.

        q_out: [1, n, H * d] (or what query_heads reads); k_out: [1, n, H_kv * d]; cos, sin: [1, n, r] with r <= d
        (r < d: partial rotary). These are the tensors the layer's own attention computed (recorded by hooks),
        so the scores match what the attention used.
        """
        head_dim = attention.head_dim
        n = k_out.shape[1]
        rows = min(rows, n)
        queries = self.query_heads(attention, q_out[0, -rows:])  # [q, H, d]
        keys = k_out[0].reshape(n, -1, head_dim)  # [n, H_kv, d]
        if hasattr(attention, "q_norm"):
            queries, keys = attention.q_norm(queries), attention.k_norm(keys)
        cos, sin = (t[0][:, None, :] for t in position_embeddings)  # [n, 1, r]
        queries = apply_rotary(queries, cos[-rows:], sin[-rows:])
        keys = apply_rotary(keys, cos, sin)
        return QueryKeys(queries=queries, keys=keys.transpose(0, 1), scaling=float(attention.scaling))

    def query_heads(self, attention: nn.Module, q_rows: torch.Tensor) -> torch.Tensor:
        """q_proj output rows [q, H * d] as query heads [q, H, d]."""
        return q_rows.reshape(q_rows.shape[0], -1, attention.head_dim)


def token_positions(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Sequence positions [n] of `token_id` in a batch-1 `input_ids` [1, N]."""
    return torch.nonzero(input_ids[0] == token_id).flatten().cpu()


def split_sizes(positions: torch.Tensor, sizes: list[int], what: str) -> list[torch.Tensor]:
    """Split a position list into consecutive chunks of the given sizes, checking the total."""
    if sum(sizes) != positions.numel():
        raise ValueError(f"{what}: the prompt has {positions.numel()} tokens but the inputs describe {sum(sizes)}")
    return list(torch.split(positions, sizes))
