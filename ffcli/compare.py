"""framefusion compare: methods side by side on one video, or accuracy per method on a JSONL dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ffcli import options as o
from ffcli.errors import reported_errors
from ffcli.groups import ModelOptions, ReductionOptions, SamplingOptions
from ffcli.render import compare_table, emit_json, progress, scores_table, stderr_console, stdout_console
from ffcli.session import decoding_progress, note_frame_cap, open_model, quiet_libraries, sampling
from framefusion.video import check_video_file

DATASET_MAX_NEW_TOKENS = 8  # dataset answers are short (an option or a word)


def compare_command(
    video: Annotated[str | None, typer.Argument(help="Video file (a local file; not with --dataset).",
                                                  show_default=False)] = None,
    question: Annotated[str | None, typer.Argument(help="The question (not with --dataset).",
                                                   show_default=False)] = None,
    dataset: Annotated[Path | None, typer.Option(
        rich_help_panel="Dataset", show_default=False,
        help="Score accuracy per method on a JSONL file instead: one {video, question, answer, options?, task?} "
             "per line, video paths relative to the file.")] = None,
    model: o.Model = "demo",
    loading: ModelOptions = ModelOptions(),
    method: o.Methods = None,
    budget: o.Budget = o.DEFAULT_BUDGET,
    reduction: ReductionOptions = ReductionOptions(),
    video_sampling: SamplingOptions = SamplingOptions(),
    max_new_tokens: Annotated[int | None, typer.Option(
        callback=o.check_positive, rich_help_panel=o.OUTPUT_PANEL, show_default=False,
        help=f"Longest answer, in tokens (default {o.DEFAULT_MAX_NEW_TOKENS}; "
             f"{DATASET_MAX_NEW_TOKENS} with --dataset).")] = None,
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Run each method on the same frames and question; report answers, speed, memory and agreement with dense."""
    quiet_libraries(verbose)
    params = reduction.params()
    frames, fps, decoder = video_sampling.frames, video_sampling.fps, video_sampling.decoder
    if dataset is not None:
        if video is not None or question is not None:
            raise typer.BadParameter("give VIDEO and QUESTION, or --dataset, not both")
        if fps is not None:
            raise typer.BadParameter("--fps does not apply to --dataset; use --frames", param_hint="'--fps'")
        with reported_errors(verbose):
            from framefusion.pipeline.evaluation import load_dataset

            items = load_dataset(dataset)
            loaded = open_model(model, loading, [frames or o.DEFAULT_FRAMES])
            _score_dataset(dataset, items, loaded, method, budget, params, frames or o.DEFAULT_FRAMES,
                           max_new_tokens or DATASET_MAX_NEW_TOKENS, decoder, json)
        return
    if video is None or question is None:
        raise typer.BadParameter("give VIDEO and QUESTION, or --dataset FILE.jsonl", param_hint="VIDEO QUESTION")
    with reported_errors(verbose):
        from framefusion.pipeline.compare import DEFAULT_METHODS, compare, with_reference

        frames_from = sampling(video_sampling)
        check_video_file(video, decoder)  # a bad file fails before the model loads
        loaded = open_model(model, loading, [frames_from.num_frames])
        planned = with_reference(method or DEFAULT_METHODS)
        with decoding_progress(video) as decoding:
            with progress(stderr_console()) as bar:
                task = bar.add_task("Running methods", total=len(planned))
                comparison = compare(loaded, video, question, planned, budget=budget, params=params,
                                     sampling=frames_from, max_new_tokens=max_new_tokens or o.DEFAULT_MAX_NEW_TOKENS,
                                     on_result=lambda _r: bar.advance(task), on_video_progress=decoding.update)
        note_frame_cap(comparison.results[0].clips, fps)
        if json:
            emit_json({**comparison.to_json(), "model": loaded.describe()})
        else:
            stdout_console().print(compare_table(comparison))


def _score_dataset(path: Path, items: list, loaded, methods: list[str] | None, budget: float, params: dict,
                   frames: int, max_new_tokens: int, decoder: str, json: bool) -> None:
    """The --dataset mode: accuracy per method, with a progress bar over all answers."""
    from framefusion.pipeline.compare import DEFAULT_METHODS, score_methods

    methods = list(dict.fromkeys(methods or DEFAULT_METHODS))
    with progress(stderr_console()) as bar:
        task = bar.add_task(f"Scoring {len(items)} items", total=len(items) * len(methods))

        def advance(method: str, _result) -> None:
            bar.update(task, advance=1, description=f"Scoring {len(items)} items ({method})")

        scores = score_methods(loaded, items, methods, budget=budget, params=params, num_frames=frames,
                               max_new_tokens=max_new_tokens, decoder=decoder, on_item=advance)
    if json:
        emit_json({"dataset": str(path), "model": loaded.name, "frames": frames,
                   "scores": [score.to_dict() for score in scores]})
    else:
        stdout_console().print(scores_table(scores, path.name))
