"""framefusion profile [VIDEO]: where time and memory go, dense vs. each budget, per frame count (Fig. 8)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.groups import ModelOptions, ReductionOptions
from ffcli.render import emit_json, profile_table, progress, stderr_console, stdout_console
from ffcli.session import open_model, quiet_libraries
from framefusion.video import VideoClip, check_video_file

GENERATED_FPS = 8.0
PROFILE_NEW_TOKENS = 16
DEFAULT_MODEL = "qwen2-vl-7b"  # without --model: Qwen2-VL-7B's architecture with random weights


def generated_clip(num_frames: int, size: int, seed: int = 0) -> VideoClip:
    """A synthetic clip (moving shapes on a textured background) of `num_frames` frames at 8 fps."""
    from framefusion.synthetic import make_sample

    sample = make_sample("direction", seed, num_frames=max(num_frames, 8), size=size)
    frames = sample.frames[:num_frames]  # [T, size, size, 3]
    timestamps = np.arange(num_frames, dtype=np.float64) / GENERATED_FPS
    return VideoClip(frames, timestamps, GENERATED_FPS, num_frames / GENERATED_FPS, source=None)


def generated_video(num_frames: int, size: int, folder: Path) -> Path:
    """The synthetic clip written as an H.264 file, so that profiling decodes a real file like any other."""
    from framefusion.video import write_video

    return write_video(folder / f"synthetic_{size}px_{num_frames}f.mp4", generated_clip(num_frames, size).frames,
                       GENERATED_FPS)


def profile_command(
    video: Annotated[str | None, typer.Argument(
        help="Video file to profile on; without it a synthetic clip is generated.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", rich_help_panel=o.MODEL_PANEL, show_default=False,
        help=f"Hub id, model directory, 'demo', or with --random-weights a short name. Default: {DEFAULT_MODEL} "
             "with random weights (Qwen2-VL-7B's real depth and proportions, built offline).")] = None,
    loading: ModelOptions = ModelOptions(),
    method: o.Method = "framefusion",
    budget: o.Budgets = None,
    reduction: ReductionOptions = ReductionOptions(),
    frames: o.FrameCounts = None,
    size: Annotated[int, typer.Option(
        callback=o.check_positive, rich_help_panel=o.VIDEO_PANEL,
        help="Frame side in pixels of the generated clip (without VIDEO; the processor may resize it).")] = 336,
    decoder: o.Decoder = "av",
    repeats: Annotated[int, typer.Option(
        callback=o.check_positive, rich_help_panel="Timing", help="Timed runs per setting; medians are reported.")] = 3,
    warmup: Annotated[int, typer.Option(
        min=0, rich_help_panel="Timing",
        help="Untimed runs before the timed ones, per setting (the first is a one-token pass that also measures "
             "the KV cache).")] = 1,
    max_new_tokens: Annotated[int, typer.Option(
        callback=o.check_positive, rich_help_panel="Timing",
        help="Tokens generated per run: exactly this many (end-of-sequence is ignored, so runs compare).")]
        = PROFILE_NEW_TOKENS,
    plot: Annotated[Path | None, typer.Option(
        rich_help_panel=o.OUTPUT_PANEL, show_default=False, help="Also write a PNG chart like the paper's Fig. 8.")]
        = None,
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Break runtime and memory down like Fig. 8: video, vision encoder, prefill, decode per token, KV cache, memory.

    Without --model it profiles Qwen2-VL-7B's architecture (28 layers) with random weights, built offline at a
    width that fits the machine, on a generated clip: the first run shows what FrameFusion does for speed.
    """
    quiet_libraries(verbose)
    budgets = budget or [o.DEFAULT_BUDGET]
    frame_counts = frames or [o.DEFAULT_FRAMES]
    if model is None:
        model, loading = DEFAULT_MODEL, dataclasses.replace(loading, random_weights=True)
    with reported_errors(verbose), tempfile.TemporaryDirectory(prefix="framefusion-profile-") as scratch:
        from framefusion.pipeline.profiling import count_runs, plot_profile, profile_runs

        if video is None:
            source = generated_video(2 * max(frame_counts), size, Path(scratch))
        else:
            source = check_video_file(video, decoder)
        loaded = open_model(model, loading, frame_counts)
        with progress(stderr_console()) as bar:
            task = bar.add_task("Profiling", total=count_runs(budgets, frame_counts, repeats, warmup, method))

            def advance(label: str) -> None:
                bar.update(task, advance=1, description=f"Profiling: {label}")

            runs = profile_runs(loaded, source, budgets, frame_counts, repeats=repeats, warmup=warmup,
                                new_tokens=max_new_tokens, method=method,
                                params=reduction.params(),
                                decoder=decoder, on_step=advance)
        if plot is not None:
            plot_profile(runs, plot)
        if json:
            emit_json({"model": loaded.describe(), "video": "generated" if video is None else video,
                       "runs": [run.to_dict() for run in runs]})
        else:
            stdout_console().print(profile_table(runs))
            if plot is not None:
                note_line(f"wrote {plot}")
