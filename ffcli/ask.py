"""framefusion ask VIDEO QUESTION [-q QUESTION ...]: stream each answer, then a one-line summary (or one JSON object
per question)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

try:  # Typer 0.29 carries its own click; earlier releases use click itself
    from typer._click.exceptions import MissingParameter
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import MissingParameter

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.groups import ModelOptions, ReductionOptions, SamplingOptions
from ffcli.render import ask_summary, emit_json, session_summary
from ffcli.session import decoding_progress, note_frame_cap, open_model, quiet_libraries, sampling, seconds_since_start
from framefusion.video import check_video_file


def ask_command(
    video: Annotated[str, typer.Argument(help="Video file to ask about (a local file; URLs are refused).", show_default=False)],
    question: Annotated[str | None, typer.Argument(
        help="The question, in quotes (or give one or more with -q).", show_default=False)] = None,
    questions: o.Questions = None,
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
    """Answer a question about a video, streaming the answer, then frames, tokens, budget and timings.

    Several questions (QUESTION and -q, in that order) are answered in turn about one decoding and one vision
    encoding of the video, each exactly as it would be alone; each summary says what was reused and what it
    saved, and --json prints one object per question.
    """
    asked = ([question] if question is not None else []) + list(questions or [])
    if not asked:
        raise MissingParameter("give QUESTION, or one or more -q QUESTION", param_hint="'QUESTION'",
                               param_type="argument")
    quiet_libraries(verbose)
    with reported_errors(verbose):
        frames_from = sampling(video_sampling)
        check_video_file(video, video_sampling.decoder)  # a bad file fails before the model loads
        loaded = open_model(model, loading, [frames_from.num_frames])
        startup_s = seconds_since_start()
        if len(asked) == 1:
            _ask_once(loaded, video, asked[0], method, budget, reduction, frames_from, video_sampling, max_new_tokens,
                      json, startup_s)
        else:
            _ask_in_turn(loaded, video, asked, method, budget, reduction, frames_from, video_sampling, max_new_tokens,
                         json, startup_s)


def _ask_once(loaded, video, question, method, budget, reduction, frames_from, video_sampling, max_new_tokens, json,
              startup_s) -> None:
    from framefusion.pipeline import ask

    with decoding_progress(video) as bar:
        result = ask(loaded, video, question, method=method, budget=budget, params=reduction.params(),
                     sampling=frames_from, max_new_tokens=max_new_tokens, on_text=None if json else _write,
                     on_video_progress=bar.update)
    note_frame_cap(result.clips, video_sampling.fps)
    if json:
        emit_json({**result.to_json(), "startup_s": startup_s, "model_info": loaded.describe()})
    else:
        _write("\n")
        note_line(ask_summary(result))


def _ask_in_turn(loaded, video, questions, method, budget, reduction, frames_from, video_sampling, max_new_tokens,
                 json, startup_s) -> None:
    from framefusion.pipeline.session import VideoSession

    with decoding_progress(video) as bar:
        session = VideoSession(loaded, video, method=method, budget=budget, sampling=frames_from,
                               on_video_progress=bar.update, **reduction.params())
    with session:
        note_frame_cap(session.clips, video_sampling.fps)
        for index, question in enumerate(questions, start=1):
            if not json:
                _write(f"Q{index}: {question}\n")
            answer = session.ask(question, max_new_tokens=max_new_tokens, on_text=None if json else _write)
            if json:
                emit_json({**answer.to_json(), "startup_s": startup_s, "model_info": loaded.describe()})
            else:
                _write("\n")
                note_line(session_summary(answer))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
