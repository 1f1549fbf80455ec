"""framefusion ask VIDEO QUESTION: stream one answer, then a one-line summary (or one JSON object)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.groups import ModelOptions, ReductionOptions, SamplingOptions
from ffcli.render import ask_summary, emit_json
from ffcli.session import decoding_progress, note_frame_cap, open_model, quiet_libraries, sampling, seconds_since_start
from framefusion.video import check_video_file


def ask_command(
    video: Annotated[str, typer.Argument(help="Video file to ask about (a local file; URLs are refused).", show_default=False)],
    question: Annotated[str, typer.Argument(help="The question, in quotes.", show_default=False)],
    model: o.Model = "demo",
    loading: ModelOptions = ModelOptions(),
    method: o.Method = "framefusion",
    budget: o.Budget = o.DEFAULT_BUDGET,
    reduction: ReductionOptions = ReductionOptions(),
    video_sampling: SamplingOptions = SamplingOptions(),
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_MAX_NEW_TOKENS,
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Answer a question about a video, streaming the answer, then frames, tokens, budget and timings."""
    quiet_libraries(verbose)
    with reported_errors(verbose):
        from framefusion.pipeline import ask

        frames_from = sampling(video_sampling)
        check_video_file(video, video_sampling.decoder)  # a bad file fails before the model loads
        loaded = open_model(model, loading)
        startup_s = seconds_since_start()
        stream = None if json else _write
        with decoding_progress(video) as bar:
            result = ask(loaded, video, question, method=method, budget=budget, params=reduction.params(),
                         sampling=frames_from, max_new_tokens=max_new_tokens, on_text=stream,
                         on_video_progress=bar.update)
        note_frame_cap(result.clips, video_sampling.fps)
        if json:
            emit_json({**result.to_json(), "startup_s": startup_s, "model_info": loaded.describe()})
        else:
            _write("\n")
            note_line(ask_summary(result))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
