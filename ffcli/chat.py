"""framefusion chat VIDEO: ask questions about one video at a prompt, each answered on one decoding and one
vision encoding of it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.groups import ModelOptions, ReductionOptions, SamplingOptions
from ffcli.render import emit_json, session_summary, size, stderr_console
from ffcli.session import decoding_progress, note_frame_cap, open_model, quiet_libraries, sampling
from framefusion.video import check_video_file

EXIT_WORDS = ("exit", "quit")
PROMPT = "[bold cyan]you ›[/bold cyan] "


def chat_command(
    video: Annotated[str, typer.Argument(help="Video file to talk about (a local file; URLs are refused).",
                                         show_default=False)],
    model: o.Model = "demo",
    loading: ModelOptions = ModelOptions(),
    method: o.Method = "framefusion",
    budget: o.Budget = o.DEFAULT_BUDGET,
    reduction: ReductionOptions = ReductionOptions(),
    video_sampling: SamplingOptions = SamplingOptions(),
    history: o.History = False,
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_MAX_NEW_TOKENS,
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Ask questions about a video at a prompt: the video is decoded and encoded once, each answer is streamed
    with a summary of what was reused. Ctrl-D or 'exit' ends it.

    Each question is answered on its own unless --history keeps the conversation; --json prints one object per
    answer on stdout (the prompt goes to stderr).
    """
    quiet_libraries(verbose)
    with reported_errors(verbose):
        from framefusion.pipeline.session import VideoSession

        frames_from = sampling(video_sampling)
        check_video_file(video, video_sampling.decoder)
        loaded = open_model(model, loading, [frames_from.num_frames])
        with decoding_progress(video) as bar:
            session = VideoSession(loaded, video, method=method, budget=budget, sampling=frames_from,
                                   history=history, on_video_progress=bar.update, **reduction.params())
        note_frame_cap(session.clips, video_sampling.fps)
        out = stderr_console() if json else Console(highlight=False)
        with session:
            answered = _converse(session, out, max_new_tokens, json)
            held = session.memory()["total"]
        note_line(f"{answered} question{'s' if answered != 1 else ''} answered; the session held {size(held)}")


def _converse(session, out: Console, max_new_tokens: int, json: bool) -> int:
    """Read questions until Ctrl-D or an exit word; answer each. Returns how many were answered."""
    answered = 0
    while True:
        try:
            question = out.input(PROMPT).strip()
        except EOFError:
            out.print()
            return answered
        if question.lower() in EXIT_WORDS:
            return answered
        if not question:
            continue
        stream = None if json else (lambda text: out.print(text, end="", markup=False, highlight=False))
        answer = session.ask(question, max_new_tokens=max_new_tokens, on_text=stream)
        answered += 1
        if json:
            emit_json(answer.to_json())
        else:
            out.print()
            stderr_console().print(session_summary(answer), style="dim", markup=False, highlight=False, soft_wrap=True)
