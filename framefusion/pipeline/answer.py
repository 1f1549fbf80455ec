"""Ask a video question with one token-reduction method and measure it: answer, tokens, timings, memory."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature, TextStreamer

from framefusion.adapters import adapter_for
from framefusion.api import reduced
from framefusion.core.compat import output_cache
from framefusion.core.feature_cache import FeatureCache
from framefusion.core.patches import patch_scope
from framefusion.core.stats import ReductionStats
from framefusion.pipeline.loading import LoadedModel
from framefusion.pipeline.measure import clock, time_vision_encoder, track_peak_memory
from framefusion.video import Sampling, VideoClip
from framefusion.video.prompting import prepare_inputs

VideoInput = VideoClip | str | Path  # a sampled clip, or a file that `Sampling` samples

DENSE = "dense"  # the registry's unreduced model: the reference for agreement and speed-ups


@dataclass
class Timings:
    """Where the time of one answer went, in seconds (device-synchronised on CUDA and MPS).

    The parts (video, processor, vision, prefill, decode) cover the request; total_s is its measured wall time,
    from opening the video to the last token (the rest is installing and removing the method, and glue).
    """

    video_s: float  # decoding and sampling the video file(s); 0 when sampled clips were passed in
    processor_s: float  # method installed, frames selected, chat template and processor, inputs on the device
    vision_s: float  # inside the model's vision encoder (get_video_features / get_image_features)
    prefill_s: float  # time to the first token, less vision_s
    decode_s: float  # from the first token to the last
    total_s: float  # the whole request, measured

    @property
    def parts_s(self) -> float:
        """The sum of the measured parts."""
        return self.video_s + self.processor_s + self.vision_s + self.prefill_s + self.decode_s

    def to_dict(self) -> dict[str, float]:
        """The timings by name."""
        return {"video_s": self.video_s, "processor_s": self.processor_s, "vision_s": self.vision_s,
                "prefill_s": self.prefill_s, "decode_s": self.decode_s, "total_s": self.total_s}


@dataclass
class AskResult:
    """One answer with what it cost; `stats` and `first_token_logits` stay out of the JSON."""

    answer: str
    model: str
    method: str
    budget: float  # the requested budget (a method without one ignores it; kept_ratio is what was achieved)
    params: dict[str, Any]  # the method parameters given (each method uses those it takes)
    frames: int  # frames fed to the model, summed over videos
    vision_tokens: int  # video tokens in the prompt (N_v)
    kept_ratio: float  # achieved budget: mean over layers of vision tokens in the KV cache / N_v
    tokens_per_layer: list[int]  # all tokens in each layer's KV cache after prefill
    timings: Timings
    peak_memory_bytes: int  # CUDA: max tensor bytes allocated; CPU/MPS: peak process RSS
    stats: ReductionStats | None = field(default=None, repr=False)
    first_token_logits: torch.Tensor | None = field(default=None, repr=False)  # [vocab] float32 on CPU
    generated_tokens: int = 0
    clips: list[VideoClip] = field(default_factory=list, repr=False)  # what the model saw (after the method's pick)
    answer_ids: list[int] = field(default_factory=list)  # the generated token ids (to compare runs token for token)

    @property
    def importance_queries(self) -> int | None:
        """Query rows the method's prune step averaged attention over (None when nothing was ranked by attention)."""
        return self.stats.importance_queries if self.stats is not None else None

    @property
    def similarity_threshold(self) -> float | None:
        """FrameFusion's S_threshold that ran (None for the other methods)."""
        return self.stats.similarity_threshold if self.stats is not None else None

    @property
    def threshold_source(self) -> str | None:
        """Where FrameFusion's threshold came from: given, calibrated (on how many videos), or the family default."""
        return self.stats.threshold_source if self.stats is not None else None

    @property
    def prefill_ratio(self) -> float:
        """Vision tokens the prefill ran per layer, over N_v (see ReductionStats.prefill_ratio; 1.0 when dense)."""
        return self.stats.prefill_ratio if self.stats is not None else 1.0

    @property
    def time_to_first_token_s(self) -> float:
        """Vision encoder plus prefill."""
        return self.timings.vision_s + self.timings.prefill_s

    def to_json(self) -> dict[str, Any]:
        """The JSON object `framefusion ask --json` prints."""
        return {
            "answer": self.answer,
            "model": self.model,
            "method": self.method,
            "budget": self.budget,
            "frames": self.frames,
            "vision_tokens": self.vision_tokens,
            "kept_ratio": self.kept_ratio,
            "prefill_ratio": self.prefill_ratio,
            "importance_queries": self.importance_queries,
            "similarity_threshold": self.similarity_threshold,
            "threshold_source": self.threshold_source,
            "params": self.params_as_run(),
            "tokens_per_layer": list(self.tokens_per_layer),
            "timings": self.timings.to_dict(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "answer_ids": list(self.answer_ids),
        }

    def params_as_run(self) -> dict[str, Any]:
        """The method parameters given, with FrameFusion's threshold as it ran (given, calibrated or default)."""
        params = dict(self.params)
        if self.similarity_threshold is not None:
            params["similarity_lower_bound"] = self.similarity_threshold
        return params


@dataclass
class Generation:
    """What one timed `generate` call produced."""

    sequences: torch.Tensor  # [1, prompt + new] token ids
    prompt_length: int
    first_token_logits: torch.Tensor  # [vocab] float32 on CPU
    vision_s: float
    first_token_s: float  # from the start of generate to the first token, vision included
    decode_s: float  # from the first token to the end of generate
    cache: Any = None  # the KV cache after generation, when asked for

    @property
    def new_tokens(self) -> torch.Tensor:
        """[new] generated token ids."""
        return self.sequences[0, self.prompt_length:]

    @property
    def prefill_s(self) -> float:
        """Time to the first token less the vision encoder."""
        return max(self.first_token_s - self.vision_s, 0.0)


class _TimingStreamer(TextStreamer):
    """Streams finished pieces of text to a callback and stamps the time of every generated token."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None] | None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text
        self.token_times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.token_times.append(time.perf_counter())  # generate hands over tokens on the CPU: already synced
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text and self.on_text is not None:
            self.on_text(text)


def model_inputs(loaded: LoadedModel, clips: Sequence[VideoClip], question: str,
                 images: Sequence[Any] | None = None, history: Sequence[tuple[str, str]] = ()) -> BatchFeature:
    """Processor outputs on the model's device, floating tensors in the model's dtype (history: earlier
    (question, answer) turns about the same videos)."""
    inputs = prepare_inputs(loaded.processor, list(clips), question, images=list(images or []) or None,
                            history=history)
    return BatchFeature({key: _to_model(value, loaded) for key, value in inputs.items()})


def _to_model(value: Any, loaded: LoadedModel) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if torch.is_floating_point(value):
        return value.to(loaded.device, dtype=loaded.dtype)
    return value.to(loaded.device)


def greedy_generate(loaded: LoadedModel, inputs: BatchFeature, max_new_tokens: int, *, min_new_tokens: int = 0,
                    on_text: Callable[[str], None] | None = None, keep_cache: bool = False,
                    temperature: float = 0.0, top_p: float | None = None,
                    stop: Sequence[str] = ()) -> Generation:
    """`generate` with the vision encoder, the first token and decoding timed separately: greedy, or sampled at
    `temperature` > 0 (with `top_p`); generation ends early at any of the `stop` strings."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    streamer = _TimingStreamer(loaded.tokenizer, on_text)
    config = copy.deepcopy(loaded.model.generation_config)
    config.do_sample, config.temperature, config.top_p, config.top_k = temperature > 0, None, None, None
    if temperature > 0:
        config.temperature, config.top_p = float(temperature), top_p
    config.max_new_tokens, config.min_new_tokens = max_new_tokens, min_new_tokens or None
    config.return_dict_in_generate, config.output_logits = True, True
    extra = {"tokenizer": loaded.tokenizer} if stop else {}
    config.stop_strings = list(stop) or None
    with torch.inference_mode(), time_vision_encoder(loaded.model, loaded.device) as encoder:
        start = clock(loaded.device)
        output = loaded.model.generate(**inputs, generation_config=config, streamer=streamer, **extra)
        end = clock(loaded.device)
    first = streamer.token_times[0] if streamer.token_times else end
    return Generation(
        sequences=output.sequences.cpu(),
        prompt_length=int(inputs["input_ids"].shape[-1]),
        first_token_logits=output.logits[0][0].float().cpu(),
        vision_s=encoder.seconds,
        first_token_s=first - start,
        decode_s=end - first,
        cache=output_cache(output) if keep_cache else None,
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[:min(ends)] if ends else text


def dense_token_counts(model: nn.Module, inputs: BatchFeature) -> tuple[int, list[int]]:
    """(N_v, tokens per layer) of the unreduced prompt."""
    adapter = adapter_for(model)
    module = adapter.multimodal_module(model)
    input_ids = inputs["input_ids"]
    layout = adapter.token_layout(module, input_ids, adapter.video_inputs(dict(inputs)))
    vision = layout.num_vision_tokens if layout is not None else 0
    return vision, [int(input_ids.shape[-1])] * len(adapter.decoder_layers(model))


def load_videos(videos: VideoInput | Sequence[VideoInput], sampling: Sampling | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[list[VideoClip], float]:
    """(clips, seconds spent decoding): files are sampled by `sampling` (default 16 frames), clips pass through."""
    items = [videos] if isinstance(videos, (VideoClip, str, Path)) else list(videos)
    start = time.perf_counter()
    clips = [item if isinstance(item, VideoClip) else (sampling or Sampling()).load(item, on_progress)
             for item in items]
    return clips, time.perf_counter() - start


@contextmanager
def served_from(features: FeatureCache | None, model: nn.Module) -> Iterator[None]:
    """The model's vision encoder served from `features` while the block runs (nothing when None)."""
    if features is None:
        yield
        return
    with patch_scope(model) as patches, features.serving(adapter_for(model).multimodal_module(model), patches):
        yield


def ask(loaded: LoadedModel, videos: VideoInput | Sequence[VideoInput], question: str, *,
        method: str = "framefusion", budget: float = 0.3, params: Mapping[str, Any] | None = None,
        sampling: Sampling | None = None, max_new_tokens: int = 64, on_text: Callable[[str], None] | None = None,
        on_video_progress: Callable[[int, int], None] | None = None, images: Sequence[Any] | None = None,
        temperature: float = 0.0, top_p: float | None = None, stop: Sequence[str] = (),
        features: FeatureCache | None = None) -> AskResult:
    """Answer a question about videos (and images) with `method` installed for the call (removed after).

    videos: sampled clips, or files that `sampling` samples (timed as `video_s`); none for an image or text
    prompt (the methods reduce video tokens only: such prompts run dense). params: method parameters by name
    (e.g. similarity_lower_bound, importance_queries); each method takes the ones it knows
    (framefusion.methods.apply_method). Greedy unless temperature > 0; the answer ends before the first of the
    `stop` strings. features: a FeatureCache that serves the vision encoder's output for inputs it has seen (the
    lmms-eval model's cache across requests).
    """
    params = dict(params or {})
    model = loaded.model
    with track_peak_memory(loaded.device) as peak:
        start = clock(loaded.device)
        clips, video_s = load_videos(videos, sampling, on_video_progress)
        processed = clock(loaded.device)  # from here: method installed, frames selected, inputs built
        with reduced(model, method, budget, **params) as run, served_from(features, model):
            clips = [run.select_frames(clip) for clip in clips]
            inputs = model_inputs(loaded, clips, question, images)
            processor_s = clock(loaded.device) - processed
            generation = greedy_generate(loaded, inputs, max_new_tokens, on_text=on_text, temperature=temperature,
                                         top_p=top_p, stop=stop)
            stats = run.stats
        total = clock(loaded.device) - start
    return answer_result(loaded, method, budget, params, clips, inputs, generation, stats, stop, video_s=video_s,
                         processor_s=processor_s, total_s=total, peak_memory_bytes=peak.bytes)


def answer_result(loaded: LoadedModel, method: str, budget: float, params: dict[str, Any], clips: list[VideoClip],
                  inputs: BatchFeature, generation: Generation, stats: ReductionStats | None, stop: Sequence[str], *,
                  video_s: float, processor_s: float, total_s: float, peak_memory_bytes: int,
                  result_type: type[AskResult] = AskResult, **extra: Any) -> AskResult:
    """The record of one generated answer (`result_type` with `extra` fields for a subclass): the text up to the
    first stop string, token counts from the method's stats (dense: from the prompt), the timings measured around
    it plus the generation's own (vision, prefill, decode)."""
    if stats is not None:
        vision_tokens, tokens_per_layer = stats.num_vision_tokens, stats.tokens_per_layer()
    else:
        vision_tokens, tokens_per_layer = dense_token_counts(loaded.model, inputs)
    return result_type(
        answer=cut_at_stop(loaded.tokenizer.decode(generation.new_tokens, skip_special_tokens=True), stop).strip(),
        model=loaded.name,
        method=method,
        budget=budget,
        params=params,
        frames=sum(clip.num_frames for clip in clips),
        vision_tokens=vision_tokens,
        kept_ratio=stats.kept_ratio if stats is not None else 1.0,
        tokens_per_layer=tokens_per_layer,
        timings=Timings(video_s=video_s, processor_s=processor_s, vision_s=generation.vision_s,
                        prefill_s=generation.prefill_s, decode_s=generation.decode_s, total_s=total_s),
        peak_memory_bytes=peak_memory_bytes,
        stats=stats,
        first_token_logits=generation.first_token_logits,
        generated_tokens=int(generation.new_tokens.numel()),
        clips=clips,
        answer_ids=generation.new_tokens.tolist(),
        **extra,
    )
