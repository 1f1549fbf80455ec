"""What every command does first: quiet the libraries, read the video, load the model."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import psutil
import typer

from ffcli.errors import note_line
from ffcli.groups import ModelOptions, SamplingOptions
from ffcli.options import DEFAULT_FRAMES, MAX_FRAMES
from ffcli.render import DelayedProgress, progress, stderr_console
from framefusion.demo import DEMO_NUM_FRAMES
from framefusion.pipeline.loading import LoadedModel, load_model
from framefusion.video import Sampling, VideoClip, set_decoder_logging

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


def sampling(options: SamplingOptions) -> Sampling:
    """--frames (default 16) or --fps, at most MAX_FRAMES frames."""
    if options.frames is not None and options.fps is not None:
        raise typer.BadParameter("give --frames or --fps, not both", param_hint="'--frames' / '--fps'")
    return Sampling(num_frames=None if options.fps is not None else options.frames or DEFAULT_FRAMES,
                    fps=options.fps, max_frames=MAX_FRAMES, decoder=options.decoder)


def decoding_progress(video: str | Path) -> DelayedProgress:
    """A progress bar on stderr for decoding `video`, shown only when decoding takes more than a second."""
    return DelayedProgress(stderr_console(), f"Decoding {Path(video).name}")


def note_frame_cap(clips: list[VideoClip], fps: float | None) -> None:
    """Say so when --fps asked for more frames than MAX_FRAMES and they were thinned."""
    for clip in clips:
        if fps is not None and clip.num_frames == MAX_FRAMES and clip.duration * fps > MAX_FRAMES:
            note_line(f"--fps {fps:g} asks for {int(clip.duration * fps)} frames; using {MAX_FRAMES} spread evenly "
                      f"(the limit that protects memory)")


def read_clip(video: str | Path, options: SamplingOptions) -> VideoClip:
    """Sample the video now (for commands that need the frames before the request): see `sampling`."""
    with decoding_progress(video) as bar:
        clip = sampling(options).load(video, on_progress=bar.update)
    note_frame_cap([clip], options.fps)
    return clip


def open_model(name: str, options: ModelOptions, frames: Sequence[int | None] = ()) -> LoadedModel:
    """Load the model behind a spinner on stderr; say so when it is the demo model or has random weights, and when
    the demo model will see a frame count it was not trained at (`frames`: the counts the command will sample,
    None where --fps decides)."""
    from framefusion.models import ModelArgError, parse_model_args

    try:
        model_args = parse_model_args(options.model_arg)
    except ModelArgError as error:
        raise typer.BadParameter(str(error), param_hint="'--model-arg'") from None
    console = stderr_console()
    with progress(console, bar=False) as bar:
        bar.add_task(f"{'Building' if options.random_weights else 'Loading'} {name} …", total=None)
        loaded = load_model(name, device=options.device, dtype=options.dtype, attn=options.attn,
                            random_weights=options.random_weights, width_scale=options.width_scale,
                            model_args=model_args)
    if loaded.is_demo:
        note_line(DEMO_NOTICE)
        note_demo_frames(frames)
    if loaded.random_weights:
        note_line(random_weights_line(loaded))
    return loaded


def note_demo_frames(frames: Sequence[int | None]) -> None:
    """The demo model answers reliably only at the frame count it was trained at: say so for any other."""
    others = sorted({count for count in frames if count is not None and count != DEMO_NUM_FRAMES})
    if None in frames:
        note_line(f"with --fps the frame count follows the video's length; the demo model was trained at "
                  f"{DEMO_NUM_FRAMES} frames per video and answers reliably only there (--frames {DEMO_NUM_FRAMES})")
    elif others:
        note_line(f"the demo model was trained at {DEMO_NUM_FRAMES} frames per video; at "
                  f"{', '.join(map(str, others))} its answers are unreliable (README: The demo model)")


def random_weights_line(loaded: LoadedModel) -> str:
    """One line saying which model was built, at what size, and that its weights are random."""
    info = loaded.describe()
    return (f"{info['name']} with random weights (timing only; answers are noise): {info['num_layers']} layers "
            f"(the real depth), hidden {info['hidden_size']}, FFN {info['intermediate_size']}, "
            f"{info['attention_heads']} heads / {info['kv_heads']} KV heads of {info['head_dim']}, width scale "
            f"{info['width_scale']:g}, {info['parameters'] / 1e9:.2f} B parameters, {info['dtype']} on "
            f"{info['device']}")


def seconds_since_start() -> float:
    """Seconds since this process started (interpreter, imports, model load: the start-up of a command)."""
    return time.time() - psutil.Process().create_time()
