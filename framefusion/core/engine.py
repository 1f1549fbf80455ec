"""Runs a token reducer inside a stock Hugging Face video LLM: hooks, per-layer forward, KV-cache bookkeeping."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from framefusion.core.compat import cache_in, output_cache
from framefusion.core.contract import FamilyAdapter, Reducer, ReducerFactory
from framefusion.core.hooks import OutputRecorder, continuation_mask, keep_cache_rows, mark_reduced_cache
from framefusion.core.layout import TokenLayout
from framefusion.core.patches import PatchStack, current_forward
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import ReductionStats

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
VIDEO_INPUTS = "_framefusion_video_inputs"  # attribute carrying video metadata on encoded video features


class ReductionEngine:
    """Runs a reducer inside a model; its patches go on the model's PatchStack, which also removes them."""

    def __init__(self, model: nn.Module, adapter: FamilyAdapter, make_reducer: ReducerFactory, description: str,
                 method: str = "custom"):
        self.model = model
        self.adapter = adapter
        self.method = method  # the registry name of the installed method (an adapter may read its layout for it)
        self.make_reducer = make_reducer
        self.description = description
        self.layers = adapter.decoder_layers(model)
        self.text_config = adapter.text_model(model).config
        self.num_layers = len(self.layers)
        self.stack = DecoderStack(tuple(adapter.is_linear(layer) for layer in self.layers))  # = decoder_stack(model)
        self.run: Reducer | None = None
        self.last_stats: ReductionStats | None = None
        self._sliced: dict[tuple[int, int, torch.device], Any] = {}
        self.prefix: Any = None  # a core.prefix.PrefixReuse a session attaches: records / replays the video prefix
        self._prefix_pass: Any = None  # its pass over the running prefill
        self.present: torch.Tensor | None = None  # positions of the rows the layers pass on, when not run.alive

    # ---- installation ----------------------------------------------------------------------------------
    def install(self, patches: PatchStack) -> None:
        """Hook the multimodal forward and route every decoder layer through the engine (undone by `patches`)."""
        check_attention(self.text_config._attn_implementation)
        module = self.adapter.multimodal_module(self.model)
        self._signature = inspect.signature(module.forward)
        patches.add_hook(module.register_forward_pre_hook(self._before_forward, with_kwargs=True), "engine: before")
        patches.add_hook(module.register_forward_hook(self._after_forward, with_kwargs=True), "engine: after")
        if hasattr(module, "get_video_features"):
            patches.wrap_method(module, "get_video_features", self._tag_video_features, "engine: video metadata")
        for index, layer in enumerate(self.layers):
            patches.replace_forward(layer, self._layer_forward(index, layer, current_forward(layer)),
                                    f"engine: decoder layer {index}")
        self.adapter.install_extras(self, self.model, patches)

    def _tag_video_features(self, original: Callable) -> Callable:
        """`original` get_video_features, attaching the video metadata to the encoded features (which `generate`
        passes on without the grids)."""
        signature = inspect.signature(original)

        @functools.wraps(original)  # generate reads the signature to pick the encoder's arguments
        def get_video_features(*args, **kwargs):
            output = original(*args, **kwargs)
            video = self.adapter.video_inputs(signature.bind_partial(*args, **kwargs).arguments)
            if video is not None and not isinstance(output, (tuple, list, torch.Tensor)):
                setattr(output, VIDEO_INPUTS, video)
            return output

        return get_video_features

    # ---- per-forward bookkeeping -------------------------------------------------------------------------
    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.run = None
        self._sliced.clear()
        self._prefix_pass, self.present = None, None
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
        if self.prefix is not None:
            self._prefix_pass = self.prefix.begin(self, self.run, input_ids, layout.positions, cache)

    def _layout(self, module: nn.Module, input_ids: torch.Tensor, video: dict | None) -> TokenLayout | None:
        layout = self.adapter.token_layout(module, input_ids, video)
        if layout is None or layout.num_vision_tokens == 0:
            return None
        last = torch.tensor([layout.seq_len - 1])
        return layout.without_positions(last)  # the last prompt token is never removed: it predicts the answer

    def _after_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        run, self.run = self.run, None
        self._sliced.clear()
        prefix, self._prefix_pass, self.present = self._prefix_pass, None, None
        if run is None:
            return
        if prefix is not None:
            prefix.finish()
        self.last_stats = run.stats()
        self.last_stats.linear_layers = self.stack.linear  # for the cost model: linear layers are linear in N
        cache = output_cache(output)
        if cache is not None:
            if run.kv_keep is not None:
                keep_cache_rows(cache, run.kv_keep)
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
            prefix = self._prefix_pass
            if prefix is not None and prefix.replays(index):
                return prefix.layer(self, index, layer, original, run, hidden, rest, kwargs)
            if index == 0:
                hidden = run.step(0, hidden)
            kwargs = self._slice_inputs(run, hidden.device, kwargs)
            if attends:
                kwargs = self._reducer_mask(run, hidden, kwargs)
            if run.finished:
                output = original(hidden, *rest, **kwargs)
                if prefix is not None:
                    prefix.after_layer(index, run, kwargs)
                return output
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
        if self._prefix_pass is not None:
            self._prefix_pass.before_step(index, run, kwargs, hidden, recorder.outputs["k"] if prunes else None, prunes)
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
        key = ("mask", run.version, hidden.device)
        if key not in self._sliced:
            self._sliced[key] = run.prefill_attention_mask(self.text_config._attn_implementation, hidden.dtype,
                                                           hidden.device)
        return kwargs if self._sliced[key] is None else {**kwargs, "attention_mask": self._sliced[key]}

    def rows(self) -> torch.Tensor | None:
        """Positions of the rows the decoder layers pass on now (None: every position of the prompt)."""
        if self.present is not None:
            return self.present
        run = self.run
        return run.alive if run is not None and run.version > 0 else None

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
