"""What every command does first: quiet the libraries, read the video, load the model."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import typer

from framefusion.loading import LoadedModel, load_model
from framefusion.video import VideoClip, load_video, set_decoder_logging

from ffcli.errors import note_line
from ffcli.options import DEFAULT_FRAMES, MAX_FRAMES
from ffcli.render import DelayedProgress, progress, stderr_console

DEMO_NOTICE = ("using the built-in demo model (a small Qwen2-VL trained on synthetic clips); "
               "pick a real model with e.g. --model Qwen/Qwen2-VL-7B-Instruct")


def quiet_libraries(verbose: bool) -> None:
    """Hide library warnings and download bars unless --verbose (errors are reported by the CLI)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    set_decoder_logging(verbose)  # FFmpeg's own log lines (PyAV, decord) only with --verbose
    if verbose:
        return
    transformers_logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def read_clip(video: str | Path, frames: int | None, fps: float | None, decoder: str) -> VideoClip:
    """Sample the video: --frames (default 16) or --fps, capped at MAX_FRAMES with a notice.

    A decode that takes more than a second shows a progress bar on stderr (PyAV reports its progress).
    """
    if frames is not None and fps is not None:
        raise typer.BadParameter("give --frames or --fps, not both", param_hint="'--frames' / '--fps'")
    if frames is None and fps is None:
        frames = DEFAULT_FRAMES
    with DelayedProgress(stderr_console(), f"Decoding {Path(video).name}") as bar:
        clip = load_video(video, num_frames=frames, fps=fps, max_frames=MAX_FRAMES, decoder=decoder,
                          on_progress=bar.update)
    if fps is not None and clip.num_frames == MAX_FRAMES and clip.duration * fps > MAX_FRAMES:
        note_line(f"--fps {fps:g} asks for {int(clip.duration * fps)} frames; using {MAX_FRAMES} spread evenly "
                  f"(the limit that protects memory)")
    return clip


def open_model(name: str, device: str, dtype: str, attn: str) -> LoadedModel:
    """Load the model behind a spinner on stderr; say so when it is the demo model."""
    console = stderr_console()
    with progress(console, bar=False) as bar:
        bar.add_task(f"Loading {name} …", total=None)
        loaded = load_model(name, device=device, dtype=dtype, attn=attn)
    if loaded.is_demo:
        note_line(DEMO_NOTICE)
    return loaded
