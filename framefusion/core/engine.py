"""Runs a token reducer inside a stock Hugging Face video LLM: hooks, per-layer forward, KV-cache bookkeeping."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Protocol

import torch
from torch import nn

from framefusion.adapters.base import FamilyAdapter
from framefusion.core.compat import cache_in, output_cache
from framefusion.core.hooks import (
    OutputRecorder,
    continuation_mask,
    current_forward,
    keep_cache_rows,
    mark_reduced_cache,
    replace_forward,
)
from framefusion.core.layout import TokenLayout
from framefusion.core.reduction import QueryKeys
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import ReductionStats

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
VIDEO_INPUTS = "_framefusion_video_inputs"  # attribute carrying video metadata on encoded video features


class Reducer(Protocol):
    """A token-reduction policy for one prefill (FrameFusion's is `PrefillReduction`)."""

    alive: torch.Tensor  # [n_alive] sequence positions still present
    version: int  # changes whenever `alive` does
    finished: bool
    query_rows: int  # last prompt rows whose attention a prune step needs (see QueryKeys)

    def prunes_at(self, point: int) -> bool: ...

    def step(self, point: int, hidden: torch.Tensor, attention: QueryKeys | None = None) -> torch.Tensor: ...

    def stats(self) -> ReductionStats: ...

    # Optional, for methods that change attention instead of removing tokens (StreamingLLM):
    # prefill_attention_mask(implementation, dtype, device) -> the mask every layer's prefill attention uses over
    #     the alive tokens, in the implementation's form, or None to keep the model's own;
    # kv_keep: rows of the KV cache to keep once the prefill ends: [n] for every layer, or a list with one entry
    #     per layer (None: that layer keeps all); None or absent: keep everything.


ReducerFactory = Callable[[TokenLayout, DecoderStack, torch.device], Reducer]


class ReductionEngine:
    """Installs a reducer into a model; one instance per model, removed with `uninstall`."""

    def __init__(self, model: nn.Module, adapter: FamilyAdapter, make_reducer: ReducerFactory, description: str):
        self.model = model
        self.adapter = adapter
        self.make_reducer = make_reducer
        self.description = description
        self.layers = adapter.decoder_layers(model)
        self.text_config = adapter.text_model(model).config
        self.num_layers = len(self.layers)
        self.stack = DecoderStack(tuple(adapter.is_linear(layer) for layer in self.layers))  # = decoder_stack(model)
        self.run: Reducer | None = None
        self.last_stats: ReductionStats | None = None
        self._sliced: dict[tuple[int, int, torch.device], Any] = {}
        self._undo: list[Callable[[], None]] = []

    # ---- lifecycle -------------------------------------------------------------------------------------
    def install(self) -> None:
        """Hook the multimodal forward and route every decoder layer through the engine."""
        check_attention(self.text_config._attn_implementation)
        module = self.adapter.multimodal_module(self.model)
        self._signature = inspect.signature(module.forward)
        before = module.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        after = module.register_forward_hook(self._after_forward, with_kwargs=True)
        self._undo += [before.remove, after.remove]
        if hasattr(module, "get_video_features"):
            self._undo.append(self._tag_video_features(module))
        for index, layer in enumerate(self.layers):
            self._undo.append(replace_forward(layer, self._layer_forward(index, layer, current_forward(layer))))
        self._undo += self.adapter.install_extras(self, self.model)

    def _tag_video_features(self, module: nn.Module) -> Callable[[], None]:
        """Attach the video metadata to encoded video features, which `generate` passes on without the grids."""
        original = module.get_video_features
        signature = inspect.signature(original)

        @functools.wraps(original)  # generate reads the signature to pick the encoder's arguments
        def get_video_features(*args, **kwargs):
            output = original(*args, **kwargs)
            video = self.adapter.video_inputs(signature.bind_partial(*args, **kwargs).arguments)
            if video is not None and not isinstance(output, (tuple, list, torch.Tensor)):
                setattr(output, VIDEO_INPUTS, video)
            return output

        had_own, previous = "get_video_features" in module.__dict__, module.__dict__.get("get_video_features")
        module.get_video_features = get_video_features
        return lambda: setattr(module, "get_video_features", previous) if had_own else delattr(module,
                                                                                              "get_video_features")

    def add_undo(self, undo: Callable[[], None]) -> None:
        """Something else to undo on uninstall (after the engine's own patches)."""
        self._undo.insert(0, undo)

    def uninstall(self) -> None:
        """Undo every patch, in reverse order."""
        while self._undo:
            self._undo.pop()()
        self.run = None

    # ---- per-forward bookkeeping -------------------------------------------------------------------------
    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.run = None
        self._sliced.clear()
        inputs = dict(kwargs)
        if args:
            inputs.update(self._signature.bind_partial(*args).arguments)
        input_ids = inputs.get("input_ids")
        cache = cache_in(inputs)
        if getattr(cache, "is_compileable", False):
            raise ValueError(f"{self.description} needs a dynamic KV cache; static/compiled caches are not supported")
        if input_ids is None or input_ids.shape[-1] <= 1:
            return  # decode step, or embeddings only: nothing to reduce
        if cache is not None and cache.get_seq_length() > 0:
            return  # continuing an earlier prompt: new tokens run dense on the (maybe reduced) cache
        video = self.adapter.video_inputs(inputs)
        if video is None:
            encoded = (inputs.get("mm_encoder_outputs") or {}).get("video")
            video = getattr(encoded, VIDEO_INPUTS, None)
        if input_ids.shape[0] != 1:
            if video is not None or any(self._layout(module, row[None], None) for row in input_ids):
                raise ValueError(
                    f"{self.description} reduces one prompt at a time: got a batch of {input_ids.shape[0]} prompts "
                    "with video. Run them one by one, or remove the reduction for batched dense inference."
                )
            return
        mask = inputs.get("attention_mask")
        layout = self._layout(module, input_ids, video)
        if layout is None:
            self.last_stats = None
            return
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and not bool(mask.all()):
            raise ValueError(f"{self.description} does not support padded prompts (attention_mask has zeros)")
        self.run = self.make_reducer(layout, self.stack, input_ids.device)

    def _layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict | None) -> TokenLayout | None:
        layout = self.adapter.token_layout(module, input_ids, video)
        if layout is None or layout.num_vision_tokens == 0:
            return None
        last = torch.tensor([layout.seq_len - 1])
        return layout.without_positions(last)  # the last prompt token is never removed: it predicts the answer

    def _after_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        run, self.run = self.run, None
        self._sliced.clear()
        if run is None:
            return
        self.last_stats = run.stats()
        self.last_stats.linear_layers = self.stack.linear  # for the cost model: linear layers are linear in N
        cache = output_cache(output)
        if cache is not None:
            keep = getattr(run, "kv_keep", None)
            if keep is not None:
                keep_cache_rows(cache, keep)
            mark_reduced_cache(cache, self.last_stats.seq_len, self.last_stats.tokens_per_layer(), self.stack.linear)

    # ---- decoder layers ----------------------------------------------------------------------------------
    def _layer_forward(self, index: int, layer: nn.Module, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            rest = args[1:]
            run = self.run
            attends = not self.stack.linear[index]  # 4-D attention masks are for attention layers only
            if run is None:
                if attends:
                    self._fix_decode_mask(index, hidden, kwargs)
                return original(hidden, *rest, **kwargs)
            if index == 0:
                hidden = run.step(0, hidden)
            kwargs = self._slice_inputs(run, hidden.device, kwargs)
            if attends:
                kwargs = self._reducer_mask(run, hidden, kwargs)
            if run.finished:
                return original(hidden, *rest, **kwargs)
            return self._reducing_block(index, layer, run, hidden, kwargs)

        return forward

    def _reducing_block(self, index: int, layer: nn.Module, run: Reducer, hidden: torch.Tensor,
                        kwargs: dict) -> torch.Tensor:
        """A pre-norm decoder layer with the reduction point between its token mixer and its FFN."""
        attention = self.adapter.mixer(layer)
        prunes = run.prunes_at(index + 1)  # only after an attention layer (the reducer knows the stack)
        recorder = OutputRecorder({"q": attention.q_proj, "k": attention.k_proj}) if prunes else nullcontext()
        residual = hidden
        with recorder:
            mixed = self.adapter.run_mixer(layer, layer.input_layernorm(hidden), kwargs)
        hidden = residual + mixed
        query_keys = None
        if prunes:
            query_keys = self.adapter.query_keys(attention, recorder.outputs["q"], recorder.outputs["k"],
                                                 kwargs["position_embeddings"], run.query_rows)
        hidden = run.step(index + 1, hidden, query_keys)
        residual = hidden
        return residual + layer.mlp(layer.post_attention_layernorm(hidden))

    def _slice_inputs(self, run: Reducer, device: torch.device, kwargs: dict) -> dict:
        """Per-token layer inputs (mask, rotary cos/sin, position ids) cut to the alive tokens, cached per change."""
        if run.version == 0:
            return kwargs
        sliced = dict(kwargs)
        for name in ("attention_mask", "position_embeddings", "position_ids"):
            value = kwargs.get(name)
            if value is None:
                continue
            key = (run.version, id(value), device)
            if key not in self._sliced:
                self._sliced[key] = slice_tokens(name, value, run.alive.to(device))
            sliced[name] = self._sliced[key]
        return sliced

    def _reducer_mask(self, run: Reducer, hidden: torch.Tensor, kwargs: dict) -> dict:
        """The prefill attention mask a reducer asks for (made once per change of the alive tokens)."""
        make = getattr(run, "prefill_attention_mask", None)
        if make is None:
            return kwargs
        key = ("mask", run.version, hidden.device)
        if key not in self._sliced:
            self._sliced[key] = make(self.text_config._attn_implementation, hidden.dtype, hidden.device)
        return kwargs if self._sliced[key] is None else {**kwargs, "attention_mask": self._sliced[key]}

    def _fix_decode_mask(self, index: int, hidden: torch.Tensor, kwargs: dict) -> None:
        """On a cache filled by a reducing prefill, layers hold different lengths: give each its own mask."""
        info = getattr(cache_in(kwargs), "_framefusion", None)
        if info is None:
            return
        kwargs["attention_mask"] = continuation_mask(hidden.shape[1], info.true_length(index),
                                                     self.text_config._attn_implementation, hidden.dtype,
                                                     hidden.device)


def slice_tokens(name: str, value: Any, alive: torch.Tensor) -> Any:
    """Cut one per-token layer input down to the alive positions (sequence order kept)."""
    if name == "position_embeddings":
        return tuple(t.index_select(-2, alive.to(t.device)) for t in value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot reduce tokens with a {type(value).__name__} {name}; use sdpa, eager or flash attention")
    if name == "attention_mask" and value.ndim == 4:  # [B, 1, N, N] prefill mask from an empty cache
        return value.index_select(-2, alive).index_select(-1, alive)
    return value.index_select(-1, alive)  # [B, N] padding mask or position ids


def check_attention(implementation: str) -> None:
    """Refuse attention implementations whose masks the engine cannot cut."""
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attention implementation {implementation!r} is not supported; use one of {', '.join(SUPPORTED_ATTENTION)}"
        )
