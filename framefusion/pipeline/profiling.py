"""Runtime and memory breakdown of dense and reduced inference (the paper's Fig. 8), and its chart."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framefusion.adapters import adapter_for
from framefusion.api import reduced
from framefusion.pipeline.answer import (
    DENSE,
    VideoInput,
    dense_token_counts,
    greedy_generate,
    load_videos,
    model_inputs,
)
from framefusion.pipeline.loading import LoadedModel
from framefusion.pipeline.measure import cache_bytes, clock, track_peak_memory
from framefusion.video import Sampling, VideoClip


@dataclass
class ProfileRun:
    """Medians over the repeats of one (method, budget, frame count); speed-ups are over dense at that frame count."""

    method: str
    budget: float  # 1.0 for dense
    frames: int
    num_layers: int
    vision_tokens: int
    kept_ratio: float
    prefill_ratio: float  # vision tokens the prefill ran per layer, over N_v (kept_ratio unless the cache is cut later)
    importance_queries: int | None  # query rows the prune importance averaged over (None: no attention ranking)
    video_s: float  # decoding and sampling the video at this frame count (once, shared by the methods)
    processor_s: float  # chat template and processor, inputs moved to the device
    vision_s: float  # vision encoder
    prefill_s: float  # LLM prefill, vision excluded
    decode_per_token_s: float
    kv_cache_bytes: int  # key/value tensors held after prefill
    peak_memory_bytes: int  # CUDA: max tensor bytes allocated; CPU/MPS: peak process RSS
    speedup_prefill: float  # dense prefill / this prefill
    speedup_end_to_end: float  # dense total / this total
    ideal_speedup: float  # dense / reduced prefill FLOPs by the paper's cost model (1.0 for dense)
    total_s: float  # video + processor + vision + prefill + decode of new_tokens tokens: one request
    new_tokens: int
    similarity_threshold: float | None = None  # FrameFusion's S_threshold that ran (None: other methods)
    threshold_source: str | None = None  # where it came from (given, calibrated, family default)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class _Sample:
    """One timed run."""

    processor_s: float
    vision_s: float
    prefill_s: float
    decode_s: float
    peak: int


def subsample(clip: VideoClip, num_frames: int) -> VideoClip:
    """`num_frames` frames of the clip, spread uniformly over it (the clip must hold at least that many)."""
    if num_frames < 1:
        raise ValueError(f"frame counts must be positive, got {num_frames}")
    if num_frames > clip.num_frames:
        raise ValueError(f"cannot take {num_frames} frames from a clip of {clip.num_frames}; "
                         f"use a longer video or fewer frames")
    picks = ((np.arange(num_frames) + 0.5) * clip.num_frames / num_frames).astype(np.int64)  # [num_frames]
    return VideoClip(clip.frames[picks], np.asarray(clip.timestamps)[picks], clip.fps, clip.duration, clip.source)


def count_runs(budgets: Sequence[float], frame_counts: Sequence[int], repeats: int, warmup: int,
               method: str = "framefusion") -> int:
    """How many generate calls profile_runs makes (for a progress bar)."""
    configs = _configs(method, budgets)
    return len(configs) * len(frame_counts) * (1 + max(warmup - 1, 0) + repeats)


def _configs(method: str, budgets: Sequence[float]) -> list[tuple[str, float]]:
    """(method, budget) pairs: dense once, then the method at each budget."""
    configs = [(DENSE, 1.0)]
    if method != DENSE:
        configs += [(method, budget) for budget in dict.fromkeys(budgets)]
    return configs


def _sampled(video: VideoInput, frames: int, decoder: str) -> tuple[VideoClip, float]:
    """(clip of `frames` frames, seconds spent decoding): a file is decoded at that count, a clip subsampled."""
    if isinstance(video, VideoClip):
        return subsample(video, frames), 0.0
    clips, seconds = load_videos(video, Sampling(num_frames=frames, max_frames=max(frames, 1), decoder=decoder))
    if clips[0].num_frames < frames:
        raise ValueError(f"{video} has only {clips[0].num_frames} frames; profile at most --frames "
                         f"{clips[0].num_frames}")
    return clips[0], seconds


def profile_runs(loaded: LoadedModel, video: VideoInput, budgets: Sequence[float] = (0.3,),
                 frame_counts: Sequence[int] = (16,), repeats: int = 3, warmup: int = 1, new_tokens: int = 16, *,
                 method: str = "framefusion", params: Mapping[str, Any] | None = None,
                 question: str = "Describe the video in detail.", decoder: str = "av",
                 on_step: Callable[[str], None] | None = None) -> list[ProfileRun]:
    """Time dense and `method` at each budget, for each frame count: medians over repeats after warm-up runs.

    video: a file (decoded once per frame count, timed as video_s) or a sampled clip (subsampled, video_s 0).
    params: method parameters by name; each method takes the ones it knows.
    """
    if repeats < 1 or warmup < 0 or new_tokens < 1:
        raise ValueError("need repeats >= 1, warmup >= 0 and new_tokens >= 1")
    if isinstance(video, VideoClip):
        for frames in frame_counts:
            subsample(video, frames)  # checked before any timing
    runs: list[ProfileRun] = []
    for frames in dict.fromkeys(frame_counts):
        clip, video_s = _sampled(video, frames, decoder)
        dense: ProfileRun | None = None
        for method_name, budget in _configs(method, budgets):
            label = f"{method_name} {budget:g}, {frames} frames"
            run = _profile_one(loaded, clip, video_s, method_name, budget, dict(params or {}), question, repeats,
                               warmup, new_tokens, label, on_step)
            dense = dense or run
            run.speedup_prefill = dense.prefill_s / run.prefill_s if run.prefill_s > 0 else float("nan")
            run.speedup_end_to_end = dense.total_s / run.total_s if run.total_s > 0 else float("nan")
            runs.append(run)
    return runs


def _profile_one(loaded: LoadedModel, clip: VideoClip, video_s: float, method: str, budget: float,
                 params: dict[str, Any], question: str, repeats: int, warmup: int, new_tokens: int, label: str,
                 on_step: Callable[[str], None] | None) -> ProfileRun:
    """All runs of one configuration: a one-token pass (the first warm-up: it leaves the prompt's KV cache and the
    statistics), further warm-ups, timed repeats."""
    model = loaded.model
    step = on_step or (lambda _label: None)
    with reduced(model, method, budget, **params) as run:
        chosen = run.select_frames(clip)
        inputs = model_inputs(loaded, [chosen], question)
        step(f"{label}: prefill")
        first = greedy_generate(loaded, inputs, 1, keep_cache=True)  # one token: the cache holds the prompt only
        kv_bytes = cache_bytes(first.cache)
        del first
        stats = run.stats
        samples = []
        extra_warmups = max(warmup - 1, 0)
        for index in range(extra_warmups + repeats):
            step(f"{label}: warm-up {index + 2}" if index < extra_warmups else
                 f"{label}: run {index - extra_warmups + 1}")
            with track_peak_memory(loaded.device) as peak:
                start = clock(loaded.device)
                inputs = model_inputs(loaded, [chosen], question)
                processor_s = clock(loaded.device) - start
                generation = greedy_generate(loaded, inputs, new_tokens, min_new_tokens=new_tokens)
            if index >= extra_warmups:
                samples.append(_Sample(processor_s, generation.vision_s, generation.prefill_s, generation.decode_s,
                                       peak.bytes))
    text = adapter_for(model).text_model(model).config
    median = {part: statistics.median(getattr(s, part) for s in samples)
              for part in ("processor_s", "vision_s", "prefill_s", "decode_s")}
    return ProfileRun(
        method=method,
        budget=budget,
        frames=chosen.num_frames,
        num_layers=len(adapter_for(model).decoder_layers(model)),
        vision_tokens=stats.num_vision_tokens if stats is not None else dense_token_counts(model, inputs)[0],
        kept_ratio=stats.kept_ratio if stats is not None else 1.0,
        prefill_ratio=stats.prefill_ratio if stats is not None else 1.0,
        importance_queries=stats.importance_queries if stats is not None else None,
        similarity_threshold=stats.similarity_threshold if stats is not None else None,
        threshold_source=stats.threshold_source if stats is not None else None,
        video_s=video_s,
        processor_s=median["processor_s"],
        vision_s=median["vision_s"],
        prefill_s=median["prefill_s"],
        decode_per_token_s=median["decode_s"] / (new_tokens - 1) if new_tokens > 1 else 0.0,
        kv_cache_bytes=kv_bytes,
        peak_memory_bytes=int(statistics.median(s.peak for s in samples)),
        speedup_prefill=1.0,
        speedup_end_to_end=1.0,
        ideal_speedup=stats.ideal_speedup(text.hidden_size, text.intermediate_size) if stats is not None else 1.0,
        total_s=video_s + sum(median.values()),
        new_tokens=new_tokens,
    )


def plot_profile(runs: Sequence[ProfileRun], path: str | Path) -> Path:
    """A PNG like the paper's Fig. 8: stacked video + processor / vision / prefill / decode time per run, speed-ups
    on top, KV bytes below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg directly: no pyplot, no display
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no profile runs to plot")
    groups = np.cumsum([0] + [runs[i].frames != runs[i - 1].frames for i in range(1, len(runs))])  # [R]
    x = np.arange(len(runs)) + 0.6 * groups  # a gap between frame counts
    labels = [f"{r.method}\n{'' if r.method == DENSE else f'b={r.budget:g}, '}{r.frames} frames" for r in runs]
    video = np.array([r.video_s + r.processor_s for r in runs])
    vision = np.array([r.vision_s for r in runs])
    prefill = np.array([r.prefill_s for r in runs])
    decode = np.array([r.decode_per_token_s * max(r.new_tokens - 1, 0) for r in runs])
    figure = Figure(figsize=(max(6.0, 1.4 * len(runs) + 2), 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    time_ax, kv_ax = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.3))
    time_ax.bar(x, video, color="tab:gray", label="video decoding and processor")
    time_ax.bar(x, vision, bottom=video, color="tab:purple", label="vision encoder")
    time_ax.bar(x, prefill, bottom=video + vision, color="tab:blue", label="LLM prefill")
    time_ax.bar(x, decode, bottom=video + vision + prefill, color="tab:orange",
                label=f"LLM decode ({max(runs[0].new_tokens - 1, 0)} tokens after the first)")
    tops = video + vision + prefill + decode
    for i, run in enumerate(runs):
        if run.method != DENSE:
            text = (f"prefill ×{run.speedup_prefill:.2f}\n(ideal ×{run.ideal_speedup:.2f})\n"
                    f"end-to-end ×{run.speedup_end_to_end:.2f}")  # over dense at the same frame count
            time_ax.annotate(text, (x[i], tops[i]), xytext=(0, 3), textcoords="offset points", ha="center",
                             va="bottom", fontsize=7)
    time_ax.set_ylim(0, tops.max() * 1.4 if tops.max() > 0 else 1)
    time_ax.set_ylabel("seconds (median)")
    time_ax.set_title("Where the time goes: dense vs. reduced", fontsize=11)
    time_ax.legend(loc="upper left", fontsize=8)
    time_ax.grid(axis="y", alpha=0.3)
    kv = np.array([r.kv_cache_bytes for r in runs], dtype=float)
    units = ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"))
    scale, unit = next(((scale, unit) for scale, unit in units if kv.max() >= scale), (1.0, "B"))
    kv_ax.bar(x, kv / scale, color="tab:green")
    kv_ax.set_ylabel(f"KV cache ({unit})")
    kv_ax.grid(axis="y", alpha=0.3)
    kv_ax.set_xticks(x, labels, fontsize=8)
    figure.savefig(path)
    return Path(path)
