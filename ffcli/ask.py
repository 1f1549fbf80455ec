"""framefusion ask VIDEO QUESTION: stream one answer, then a one-line summary (or one JSON object)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from framefusion.video import check_video_file

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.render import ask_summary, emit_json
from ffcli.session import (decoding_progress, note_frame_cap, open_model, quiet_libraries, sampling,
                           seconds_since_start)


def ask_command(
    video: Annotated[str, typer.Argument(help="Video file to ask about (a local file; URLs are refused).", show_default=False)],
    question: Annotated[str, typer.Argument(help="The question, in quotes.", show_default=False)],
    model: o.Model = "demo",
    random_weights: o.RandomWeights = False,
    width_scale: o.WidthScale = None,
    method: o.Method = "framefusion",
    budget: o.Budget = o.DEFAULT_BUDGET,
    similarity: o.Similarity = o.DEFAULT_SIMILARITY,
    ratio_lower_bound: o.RatioLowerBound = o.DEFAULT_RATIO_LOWER_BOUND,
    importance_queries: o.ImportanceQueries = None,
    saliency: o.Saliency = "attention",
    budget_rule: o.BudgetRule = "matched",
    frames: o.Frames = None,
    fps: o.Fps = None,
    decoder: o.Decoder = "av",
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_MAX_NEW_TOKENS,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "sdpa",
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Answer a question about a video, streaming the answer, then frames, tokens, budget and timings."""
    quiet_libraries(verbose)
    with reported_errors(verbose):
        from framefusion.pipeline import ask

        frames_from = sampling(frames, fps, decoder)
        check_video_file(video, decoder)  # a bad file fails before the model loads
        loaded = open_model(model, device, dtype, attn, random_weights, width_scale)
        startup_s = seconds_since_start()
        stream = None if json else _write
        params = o.method_params(similarity, ratio_lower_bound, importance_queries, saliency, budget_rule)
        with decoding_progress(video) as bar:
            result = ask(loaded, video, question, method=method, budget=budget, params=params, sampling=frames_from,
                         max_new_tokens=max_new_tokens, on_text=stream, on_video_progress=bar.update)
        note_frame_cap(result.clips, fps)
        if json:
            emit_json({**result.to_json(), "startup_s": startup_s, "model_info": loaded.describe()})
        else:
            _write("\n")
            note_line(ask_summary(result))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
