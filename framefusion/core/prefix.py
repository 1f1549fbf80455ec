"""Reusing a prompt's video prefix across questions: recorded in one prefill, replayed in the next ones.

Why it is exact. Under causal attention the states of the tokens at positions < P depend only on those tokens.
With P the position after the prompt's last video token and the question after it (every supported chat template
puts the videos first), the prefix's hidden states, its KV rows and every reduction step that reads only video
tokens (FrameFusion's merges, the pre-LLM selections, DyCoke's temporal merge) are the same whatever the question,
up to the first step that ranks tokens by the attention of the prompt's last rows, which are the question's:
FrameFusion's prune, FastV's prune, HoliTom's inner merge, DyCoke's KV pruning (`Reducer.prunes_at`). That point
is the boundary B (B = L when no step ranks by attention: dense, `uniform`, the pre-LLM methods, FrameFusion when
its merges meet the budget). This rests on one property of the reducers, true of every one here and to be kept by
new ones: a step that does not rank by attention reads only the video tokens' states (StagedReduction hands its
choosers the video rows; FrameFusion's merges compare video tokens), and the prefill mask is the model's causal one
(a reducer with its own mask is not replayed).

A recording prefill keeps, for the layers l < B, the prefix's KV rows, and for each reduction point k <= B, the
prefix rows of the states entering the step at k (and at B the prefix's k_proj outputs, which the attention
ranking reads). A replaying prefill runs point 0 on the whole prompt's embeddings (the
features come from the same encoder call), then in layers l < B only the question's tokens: the recorded KV rows
go into the layer's cache first and the question's rows attend to them (an explicit mask: all prefix rows, causal
among the question's); at each reduction point the recorded prefix states are put back next to the question's
and the reducer runs its step on the whole, as in a fresh prefill, so its state, statistics and KV evictions are
a fresh prefill's. From B on every alive token runs again: the question-dependent step and the layers after it
are never reused.

Not replayed (the prefill runs in full; the vision features and pre-LLM selections are still reused):
- hybrid decoders (Qwen3.5, MiniCPM-V 4.6 / 4.7): a linear-attention layer keeps a recurrent state, not KV rows,
  and transformers' cache offers no public way to start a layer's chunked recurrence from a recorded mid-prompt
  state (its chunks are counted from the prompt's start, so even the summation order would change);
- a reducer with its own prefill attention mask (StreamingLLM): its window is counted back from the prompt's end,
  so which prefix tokens a prefix token attends to depends on the question's length;
- attention implementations other than sdpa and eager (flash attention aligns a causal mask differently and is
  untested here);
- a prompt whose first P token ids differ from the recorded ones (another video, a template that puts the
  question first), or whose question part is shorter than the reducer's query rows.

Floating point: the replayed values are the recorded ones, but the question's rows now run in matrix products of
other shapes than in one full prefill, which may round differently in the last bit (no more than two runs of
the same prompt at different batch shapes). The tests compare answers token for token.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from framefusion.core.compat import cache_in
from framefusion.core.contract import Reducer
from framefusion.core.engine import slice_tokens
from framefusion.core.hooks import OutputRecorder, continuation_mask

REPLAY_ATTENTION = ("sdpa", "eager")


@dataclass
class PrefixRecord:
    """What a recording prefill kept of the prompt's video prefix (positions < length)."""

    length: int  # P: the position after the last video token
    ids: torch.Tensor  # [P] the prefix's token ids (CPU)
    boundary: int  # B: layers 0 .. B - 1 are replayed
    keys: list[torch.Tensor]  # per layer < B: [1, H_kv, n_l, d], the prefix's alive rows of that layer's cache
    values: list[torch.Tensor]
    states: dict[int, torch.Tensor]  # point k in 1..B -> [1, n_k, D] prefix rows entering the step at k
    key_outputs: torch.Tensor | None = None  # [1, n_B, H_kv * d] prefix rows of layer B-1's k_proj (ranked step)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        tensors = [*self.keys, *self.values, *self.states.values(), self.ids]
        if self.key_outputs is not None:
            tensors.append(self.key_outputs)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class PrefixUse:
    """What one prefill did with the prefix."""

    recorded: bool = False
    replayed_layers: int = 0  # layers in which the prefix was not recomputed
    prefix_tokens: int = 0  # P
    note: str | None = None  # why nothing was replayed


class PrefixReuse:
    """Attached to an engine (`engine.prefix`) by a session: records the first prefill's video prefix and replays
    it in the following prefills whose prefix is the same."""

    def __init__(self) -> None:
        self.record: PrefixRecord | None = None
        self.last = PrefixUse()  # what the last prefill did

    @property
    def nbytes(self) -> int:
        """Bytes held by the record."""
        return self.record.nbytes if self.record is not None else 0

    def clear(self) -> None:
        """Forget the record."""
        self.record = None

    def begin(self, engine: Any, run: Reducer, input_ids: torch.Tensor, vision_positions: torch.Tensor,
              cache: Any) -> "Recording | Replay | None":
        """The prefix pass of a prefill about to run (None when nothing can be recorded or replayed; `last.note`
        says why)."""
        self.last = PrefixUse()
        note = unsupported(engine, run, cache)
        length = int(vision_positions.max()) + 1 if vision_positions.numel() else 0
        seq_len = int(input_ids.shape[-1])
        if note is None and length == 0:
            note = "the prompt has no video tokens"
        if note is None and seq_len - length < max(run.query_rows, 1):
            note = (f"the question part ({seq_len - length} tokens after the video) is shorter than the "
                    f"{run.query_rows} query rows the method ranks by")
        if note is not None:
            self.last.note = note
            return None
        ids = input_ids[0, :length].cpu()
        self.last.prefix_tokens = length
        if self.record is None:
            return Recording(self, length, ids, engine.num_layers)
        if self.record.length != length or not torch.equal(self.record.ids, ids):
            self.last.note = "the prompt's video prefix differs from the recorded one"
            return None
        return Replay(self, self.record, seq_len)


def unsupported(engine: Any, run: Reducer, cache: Any) -> str | None:
    """Why a prefill cannot record or replay a prefix, or None."""
    implementation = engine.text_config._attn_implementation
    if engine.stack.hybrid:
        return "linear-attention layers keep a recurrent state, not KV rows (hybrid decoder)"
    if type(run).prefill_attention_mask is not Reducer.prefill_attention_mask:
        return "the method sets its own prefill attention mask, which depends on the prompt's length"
    if implementation not in REPLAY_ATTENTION:
        return f"{implementation} attention (replay is done for {' and '.join(REPLAY_ATTENTION)})"
    layers = getattr(cache, "layers", None)
    if cache is None or layers is None or not hasattr(cache, "update"):
        return "no dynamic KV cache"
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        return "sliding-window cache layers"
    return None


def prefix_rows(alive: torch.Tensor, length: int) -> int:
    """How many of the alive rows (ascending positions) lie in the prefix."""
    return int((alive < length).sum())


@dataclass
class Recording:
    """A prefill that keeps its prefix for later ones (the prefill itself runs unchanged)."""

    owner: PrefixReuse
    length: int
    ids: torch.Tensor
    num_layers: int
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    states: dict[int, torch.Tensor] = field(default_factory=dict)
    key_outputs: torch.Tensor | None = None
    boundary: int | None = None
    broken: bool = False

    def replays(self, index: int) -> bool:
        """A recording replays nothing."""
        return False

    def after_layer(self, index: int, run: Reducer, kwargs: dict) -> None:
        """Layer `index` ran without a reduction step: keep its prefix KV rows."""
        if self.boundary is None:
            self._keep_kv(index, kwargs, prefix_rows(run.alive, self.length))

    def before_step(self, index: int, run: Reducer, kwargs: dict, hidden: torch.Tensor,
                    key_output: torch.Tensor | None, ranks: bool) -> None:
        """Layer `index`'s attention ran and the step at point index + 1 is next: keep the prefix's KV rows and
        states (and, when the step ranks by attention, its k_proj rows: the boundary)."""
        if self.boundary is not None:
            return
        rows = prefix_rows(run.alive, self.length)
        self._keep_kv(index, kwargs, rows)
        self.states[index + 1] = hidden[:, :rows].clone()  # [1, n, D]
        if ranks:
            if key_output is None:
                self.broken = True
                return
            self.key_outputs = key_output[:, :rows].clone()
            self.boundary = index + 1

    def _keep_kv(self, index: int, kwargs: dict, rows: int) -> None:
        cache = cache_in(kwargs)
        if len(self.keys) != index or cache is None or index >= len(getattr(cache, "layers", ())):
            self.broken = True
            return
        layer = cache.layers[index]
        self.keys.append(layer.keys[:, :, :rows].clone())
        self.values.append(layer.values[:, :, :rows].clone())

    def finish(self) -> None:
        """The prefill ended: store the record (every layer's KV when no step ranked by attention)."""
        boundary = self.boundary if self.boundary is not None else self.num_layers
        if self.broken or len(self.keys) < boundary:
            self.owner.last.note = "the prefill did not pass every layer through the engine"
            return
        self.owner.record = PrefixRecord(self.length, self.ids, boundary, self.keys[:boundary],
                                         self.values[:boundary], self.states, self.key_outputs)
        self.owner.last.recorded = True


class Replay:
    """A prefill whose layers before the boundary run the question's tokens only, on the recorded prefix."""

    def __init__(self, owner: PrefixReuse, record: PrefixRecord, seq_len: int):
        self.owner = owner
        self.record = record
        self.suffix = seq_len - record.length  # S: tokens after the prefix (never removed by any method)
        self._suffix_positions: torch.Tensor | None = None
        owner.last.replayed_layers = record.boundary

    def replays(self, index: int) -> bool:
        """Whether layer `index` runs on the question's tokens only."""
        return index < self.record.boundary

    def after_layer(self, index: int, run: Reducer, kwargs: dict) -> None:
        """Nothing to keep."""

    def before_step(self, *args: Any) -> None:
        """Nothing to keep."""

    def finish(self) -> None:
        """Nothing to store."""

    def layer(self, engine: Any, index: int, layer: torch.nn.Module, original: Any, run: Reducer,
              hidden: torch.Tensor, rest: tuple, kwargs: dict) -> torch.Tensor:
        """Layer `index` (< B) on the question's rows, the recorded prefix in its cache; returns the rows the next
        layer takes (the question's, or every alive row after the boundary's step)."""
        record = self.record
        if index == 0:
            hidden = run.step(0, hidden)  # point 0 sees the whole prompt's embeddings
            hidden = hidden[:, -self.suffix:]
        prefix = record.keys[index].shape[-2]
        if prefix_rows(run.alive, record.length) != prefix:
            raise RuntimeError(f"prefix replay: layer {index} keeps {prefix_rows(run.alive, record.length)} prefix "
                               f"tokens, the recording kept {prefix}")
        cache = cache_in(kwargs)
        cache.update(record.keys[index], record.values[index], getattr(engine.adapter.mixer(layer), "layer_idx", index))
        own = self._suffix_inputs(engine, kwargs, hidden, prefix)
        if run.finished:
            out = original(hidden, *rest, **own)
        else:
            out = self._reducing(engine, index, layer, run, hidden, own, kwargs)
        engine.present = self.positions(hidden.device) if index + 1 < record.boundary else None
        return out

    def positions(self, device: torch.device) -> torch.Tensor:
        """[S] sequence positions of the question's rows."""
        if self._suffix_positions is None or self._suffix_positions.device != device:
            start = self.record.length
            self._suffix_positions = torch.arange(start, start + self.suffix, device=device)
        return self._suffix_positions

    def _suffix_inputs(self, engine: Any, kwargs: dict, hidden: torch.Tensor, prefix: int) -> dict:
        """The layer's per-token inputs cut to the question's rows; its mask over the prefix and them."""
        own = dict(kwargs)
        positions = self.positions(hidden.device)
        for name in ("position_embeddings", "position_ids"):
            if kwargs.get(name) is not None:
                own[name] = slice_tokens(name, kwargs[name], positions)
        own["attention_mask"] = continuation_mask(self.suffix, prefix, engine.text_config._attn_implementation,
                                                  hidden.dtype, hidden.device)
        return own

    def _reducing(self, engine: Any, index: int, layer: torch.nn.Module, run: Reducer, hidden: torch.Tensor,
                  own: dict, kwargs: dict) -> torch.Tensor:
        """The engine's reducing block with the recorded prefix states put back before the step."""
        point = index + 1
        attention = engine.adapter.mixer(layer)
        ranks = run.prunes_at(point)
        recorder = OutputRecorder({"q": attention.q_proj, "k": attention.k_proj}) if ranks else nullcontext()
        with recorder:
            mixed = engine.adapter.run_mixer(layer, layer.input_layernorm(hidden), own)
        hidden = hidden + mixed  # [1, S, D] the question's rows after attention
        state = self.record.states.get(point)
        if state is None:
            raise RuntimeError(f"prefix replay: no recorded states at point {point}")
        whole = torch.cat([state.to(hidden.device, hidden.dtype), hidden], dim=1)  # [1, n_alive, D]
        query_keys = None
        if ranks:
            key_outputs = torch.cat([self.record.key_outputs.to(hidden.device), recorder.outputs["k"]], dim=1)
            embeddings = slice_tokens("position_embeddings", kwargs["position_embeddings"],
                                      run.alive.to(hidden.device))
            query_keys = engine.adapter.query_keys(attention, recorder.outputs["q"], key_outputs, embeddings,
                                                   run.query_rows)
        whole = run.step(point, whole, query_keys)
        if point < self.record.boundary:
            whole = whole[:, -self.suffix:]
        return whole + layer.mlp(layer.post_attention_layernorm(whole))
