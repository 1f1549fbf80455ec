"""A video asked many questions: decoded and vision-encoded once, each answer the one a fresh `ask` gives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from framefusion.adapters import adapter_for, decoder_stack
from framefusion.api import reduced
from framefusion.core.engine import SUPPORTED_ATTENTION, ReductionEngine
from framefusion.core.feature_cache import FeatureCache
from framefusion.core.patches import PatchStack, patch_scope
from framefusion.core.prefix import PrefixReuse, PrefixUse
from framefusion.methods import get_method
from framefusion.methods.install import installed_engine
from framefusion.methods.memo import MEMO_ATTRIBUTE, SelectionMemo
from framefusion.methods.oneshot import StagedReduction
from framefusion.pipeline.answer import AskResult, VideoInput, answer_result, greedy_generate, load_videos, model_inputs
from framefusion.pipeline.loading import LoadedModel
from framefusion.pipeline.measure import clock, track_peak_memory
from framefusion.video import Sampling


class SessionClosedError(RuntimeError):
    """A question was asked of a closed VideoSession."""


@dataclass
class Reuse:
    """What one answer of a session took from earlier work, and about how much time that saved."""

    frames: bool  # the decoded frames were reused (decoding happened for the first question)
    features_served: int  # vision-encoder calls answered from the session's features
    features_encoded: int  # vision-encoder calls that ran
    selections: int  # pre-LLM selections (VidCom2, EVS, VisionZip, FastVID, HoliTom's outer stage) reused
    prefix_layers: int  # decoder layers in which the video prefix was replayed, not recomputed
    num_layers: int
    prefix_tokens: int  # prompt positions before the question (the video prefix)
    recorded: bool  # this answer's prefill recorded the prefix for the next ones
    note: str | None  # why no prefix was replayed, when none was
    saved_s: float  # estimate: decoding + encoding skipped, plus the recording prefill's time less this one's

    def summary(self) -> str:
        """One line for people: what was reused and what it saved."""
        parts = []
        if self.frames:
            parts.append("decoded frames")
        if self.features_served:
            parts.append("vision features")
        if self.selections:
            parts.append("reduced video")
        if self.prefix_layers:
            parts.append(f"video KV prefix in {self.prefix_layers}/{self.num_layers} layers "
                         f"({self.prefix_tokens} tokens)")
        if not parts:
            recorded = "; video prefix recorded" if self.recorded else ""
            return f"first question: nothing reused yet{recorded}"
        saved = f" · saved ≈ {self.saved_s:.2f} s" if self.saved_s >= 0.005 else ""
        why = f" (no KV prefix: {self.note})" if not self.prefix_layers and self.note else ""
        return "reused " + ", ".join(parts) + why + saved

    def to_json(self) -> dict[str, Any]:
        """The record `--json` prints under "reused"."""
        return {"frames": self.frames, "features_served": self.features_served,
                "features_encoded": self.features_encoded, "selections": self.selections,
                "prefix_layers": self.prefix_layers, "num_layers": self.num_layers,
                "prefix_tokens": self.prefix_tokens, "recorded": self.recorded, "note": self.note,
                "saved_s": self.saved_s}


@dataclass
class SessionAnswer(AskResult):
    """An AskResult of a session, with its question and what it reused."""

    question: str = ""
    reuse: Reuse | None = None

    def to_json(self) -> dict[str, Any]:
        """AskResult's JSON plus "question" and "reused"."""
        return {**super().to_json(), "question": self.question,
                "reused": self.reuse.to_json() if self.reuse is not None else None}


class VideoSession:
    """Videos decoded and vision-encoded once, then asked any number of questions (`session.ask(q)`).

    Every answer equals, token for token, what `framefusion.pipeline.ask` gives for the same question, videos,
    method, budget and parameters (the tests check every method on two families). Only what does not depend on
    the question is reused, and only where it is exactly what a fresh request would compute:

    - the decoded frames (decoded here, once);
    - the vision features: the encoder's output for these exact pixel inputs (core/feature_cache.py: keyed by a
      SHA-256 of the processor's tensors), with the vision-encoder saliency VisionZip, FastVID and HoliTom rank by;
    - the pre-LLM selection of VidCom2, EVS, VisionZip, FastVID and HoliTom's outer stage (a function of the
      features, the saliency and the budget: methods/memo.py); `uniform`'s fewer frames are picked by index and
      encoded once;
    - the KV rows of the video prefix (the tokens up to the last video token; the question comes after it) in
      the decoder layers before the first step that ranks tokens by the question's attention (core/prefix.py
      explains why that is exact): every layer for dense, `uniform`, VidCom2, EVS, VisionZip and FastVID, and for
      FrameFusion when its merges alone meet the budget; the layers before FrameFusion's prune (its merges
      there read video tokens only), before FastV's prune, before HoliTom's inner merge and before DyCoke's KV
      pruning. The first question records it; the later ones replay it.

    Not reused, and why: the question-dependent step and every layer after it (their inputs depend on the
    question's attention); StreamingLLM's KV prefix (its window is counted back from the prompt's end, so a
    prefix token's attention span depends on the question's length); the KV prefix on hybrid decoders (Qwen3.5,
    MiniCPM-V 4.6 / 4.7: a linear-attention layer's recurrent state cannot be restarted from a recorded point
    through transformers' cache); with attention other than sdpa or eager; the processor's work (it re-runs
    for each prompt; its video tensors are what the feature cache is keyed by). With `history=True` the earlier
    turns are part of the prompt after the video, so the prefix is still reused.

    Memory: the features once per video (the LLM's input tokens: tokens x hidden size x dtype bytes), the
    prefix's KV rows (layers x prefix tokens x 2 x KV heads x head size x dtype bytes, less where tokens were
    merged), FrameFusion's recorded states at its merge points, and the kept tokens of a pre-LLM selection;
    `memory()` reports them. `close()` frees everything; a question after it is a SessionClosedError.
    """

    def __init__(self, loaded: LoadedModel, videos: VideoInput | Sequence[VideoInput], *,
                 method: str = "framefusion", budget: float = 0.3, sampling: Sampling | None = None,
                 history: bool = False, reuse_prefix: bool = True,
                 on_video_progress: Callable[[int, int], None] | None = None, **params: Any):
        get_method(method)  # a clear error listing the methods
        self.loaded = loaded
        self.method = method
        self.budget = budget
        self.params: dict[str, Any] = dict(params)
        self.history = history
        self.reuse_prefix = reuse_prefix
        with reduced(loaded.model, method, budget, **self.params):  # bad parameters fail here, not mid-session
            pass
        self.clips, self.video_s = load_videos(videos, sampling, on_video_progress)
        self.turns: list[tuple[str, str]] = []
        self.answers = 0
        self.closed = False
        self._features = FeatureCache()
        self._memo = SelectionMemo()
        self._prefix = PrefixReuse()
        self._recorded_prefill_s: float | None = None

    # ---------------------------------------------------------------- questions

    def ask(self, question: str, *, max_new_tokens: int = 64, on_text: Callable[[str], None] | None = None,
            temperature: float = 0.0, top_p: float | None = None, stop: Sequence[str] = ()) -> SessionAnswer:
        """Answer a question about the session's videos (the options as in pipeline.ask)."""
        if self.closed:
            raise SessionClosedError("this VideoSession is closed (close() freed its frames, features and KV "
                                     "prefix): open a new session to ask more questions")
        loaded, model = self.loaded, self.loaded.model
        device = loaded.device
        first = self.answers == 0
        before = (self._features.hits, self._features.misses, self._features.saved_s, self._memo.hits)
        with track_peak_memory(device) as peak:
            start = clock(device)  # from here: method installed, frames selected, inputs built (processor_s)
            with reduced(model, self.method, self.budget, **self.params) as run, patch_scope(model) as patches:
                clips = [run.select_frames(clip) for clip in self.clips]
                self._attach(model, patches)
                with self._features.serving(adapter_for(model).multimodal_module(model), patches):
                    inputs = model_inputs(loaded, clips, question, history=self.turns if self.history else ())
                    processor_s = clock(device) - start
                    generation = greedy_generate(loaded, inputs, max_new_tokens, on_text=on_text,
                                                 temperature=temperature, top_p=top_p, stop=stop)
                stats = run.stats
            total = clock(device) - start
        video_s = self.video_s if first else 0.0
        result = answer_result(loaded, self.method, self.budget, dict(self.params), clips, inputs, generation, stats,
                               stop, video_s=video_s, processor_s=processor_s, total_s=total + video_s,
                               peak_memory_bytes=peak.bytes, result_type=SessionAnswer, question=question)
        result.reuse = self._reuse(first, before, generation.prefill_s, len(result.tokens_per_layer))
        self.answers += 1
        if self.history:
            self.turns.append((question, result.answer))
        return result

    def _attach(self, model: Any, patches: PatchStack) -> None:
        """Put the session's selection memo and video prefix on the installed method (patches undone after)."""
        patches.set_attribute(model, MEMO_ATTRIBUTE, self._memo, "session: selection memo")
        if not self.reuse_prefix:
            return
        engine = installed_engine(model)
        if engine is None:  # dense: an engine that reduces nothing carries the prefix
            attention = adapter_for(model).text_model(model).config._attn_implementation
            if decoder_stack(model).hybrid or attention not in SUPPORTED_ATTENTION:
                self._prefix.last = PrefixUse(note="linear-attention layers keep a recurrent state, not KV rows "
                                                   "(hybrid decoder)" if decoder_stack(model).hybrid else
                                              f"{attention} attention")
                return
            engine = ReductionEngine(model, adapter_for(model), _pass_through, "dense (video session)")
            engine.install(patches)
        patches.set_attribute(engine, "prefix", self._prefix, "session: video prefix")

    def _reuse(self, first: bool, before: tuple, prefill_s: float, num_layers: int) -> Reuse:
        hits, misses, saved_s, memo_hits = before
        use = self._prefix.last if self.reuse_prefix else None
        if use is not None and use.recorded:
            self._recorded_prefill_s = prefill_s
        replayed = use.replayed_layers if use is not None else 0
        saved = self._features.saved_s - saved_s + (0.0 if first else self.video_s)
        if replayed and self._recorded_prefill_s is not None:
            saved += max(self._recorded_prefill_s - prefill_s, 0.0)
        note = "turned off (reuse_prefix=False)" if use is None else use.note
        return Reuse(frames=not first, features_served=self._features.hits - hits,
                     features_encoded=self._features.misses - misses, selections=self._memo.hits - memo_hits,
                     prefix_layers=replayed, num_layers=num_layers,
                     prefix_tokens=use.prefix_tokens if use is not None else 0,
                     recorded=bool(use is not None and use.recorded), note=note, saved_s=saved)

    # ---------------------------------------------------------------- memory and lifetime

    def memory(self) -> dict[str, int]:
        """Bytes the session holds: decoded frames, vision features, the video prefix, pre-LLM selections."""
        frames = sum(int(clip.frames.nbytes) for clip in self.clips)
        return {"frames": frames, "features": self._features.nbytes, "prefix": self._prefix.nbytes,
                "selections": self._memo.nbytes,
                "total": frames + self._features.nbytes + self._prefix.nbytes + self._memo.nbytes}

    def close(self) -> None:
        """Free the frames, features, selections and prefix; later questions raise SessionClosedError."""
        self.closed = True
        self.clips = []
        self._features.clear()
        self._memo.clear()
        self._prefix.clear()

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _pass_through(layout, stack, device) -> StagedReduction:
    """A reducer with no step: the dense model, run through the engine so that the prefix can be replayed."""
    return StagedReduction(layout, stack.num_layers, device, "dense", [])

