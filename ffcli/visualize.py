"""framefusion visualize VIDEO: draw which patches were merged or pruned, tokens per layer, a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ffcli import options as o
from ffcli.errors import reported_errors
from ffcli.groups import ModelOptions, ReductionOptions, SamplingOptions
from ffcli.render import emit_json, stdout_console
from ffcli.session import open_model, quiet_libraries, read_clip, sampling

DEFAULT_QUESTION = "Describe the video in detail."


def visualize_command(
    video: Annotated[str, typer.Argument(help="Video file to visualize the reduction on (a local file).", show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", rich_help_panel=o.OUTPUT_PANEL, help="Folder for the PNG files (created if needed).")]
        = Path("framefusion-visualize"),
    layer: Annotated[int | None, typer.Option(
        min=0, metavar="L", rich_help_panel=o.OUTPUT_PANEL, show_default=False,
        help="Draw the tokens that layer L's attention sees (default: the state after the last merge step).")] = None,
    question: Annotated[str, typer.Option(
        rich_help_panel=o.REDUCTION_PANEL, help="Question in the prompt (pruning depends on it).")] = DEFAULT_QUESTION,
    model: o.Model = "demo",
    loading: ModelOptions = ModelOptions(),
    method: o.Method = "framefusion",
    budget: o.Budget = o.DEFAULT_BUDGET,
    reduction: ReductionOptions = ReductionOptions(),
    video_sampling: SamplingOptions = SamplingOptions(),
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Draw merged and pruned patches (Figs. 21-22), tokens per layer (Fig. 14) and a contact sheet, as PNGs."""
    quiet_libraries(verbose)
    with reported_errors(verbose):
        from framefusion.pipeline import ask
        from framefusion.pipeline.visualize import default_point, render_visualization

        clip = read_clip(video, video_sampling)
        loaded = open_model(model, loading, [sampling(video_sampling).num_frames])
        result = ask(loaded, clip, question, method=method, budget=budget, params=reduction.params(),
                     max_new_tokens=1)  # one prefill records the reduction
        stats = result.stats
        if stats is None:
            raise ValueError(f"method {method!r} recorded no per-token reduction to draw; try --method framefusion")
        if layer is not None and layer >= stats.num_layers:
            raise ValueError(f"--layer must be below the model's {stats.num_layers} decoder layers, got {layer}")
        point = default_point(stats) if layer is None else layer  # point L: what layer L's attention sees
        paths = render_visualization(result.clips[0], stats, out, point=point)
        if json:
            emit_json({"model": loaded.name, "method": method, "budget": budget, "frames": result.frames,
                       "vision_tokens": result.vision_tokens, "kept_ratio": result.kept_ratio,
                       "prefill_ratio": result.prefill_ratio, "importance_queries": result.importance_queries,
                       "similarity_threshold": result.similarity_threshold, "threshold_source": result.threshold_source,
                       "params": result.params_as_run(),
                       "num_layers": stats.num_layers, "point": point, "files": [str(p) for p in paths]})
        else:
            console = stdout_console()
            console.print(f"[bold]{method}[/bold] kept {result.kept_ratio:.3f} of {result.vision_tokens} vision tokens "
                          f"on {result.frames} frames; drawn at reduction point {point}:", soft_wrap=True)
            for path in paths:
                console.print(f"  {path}", soft_wrap=True, highlight=False)
