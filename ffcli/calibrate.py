"""framefusion calibrate VIDEO|DIR ...: FrameFusion's similarity threshold for a model, by the paper's rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ffcli import options as o
from ffcli.errors import note_line, reported_errors
from ffcli.groups import ModelOptions, SamplingOptions
from ffcli.render import calibration_table, emit_json, progress, stderr_console, stdout_console
from ffcli.session import open_model, quiet_libraries, sampling


def calibrate_command(
    videos: Annotated[list[str] | None, typer.Argument(
        help="Video files, or folders whose video files are all used (the paper used 128 VideoMME videos).",
        show_default=False)] = None,
    model: o.Model = "demo",
    loading: ModelOptions = ModelOptions(),
    video_sampling: SamplingOptions = SamplingOptions(),
    show: Annotated[bool, typer.Option(
        "--show", rich_help_panel=o.OUTPUT_PANEL,
        help="Print the calibration stored for --model (and the threshold runs use) instead of calibrating.")]
        = False,
    save: Annotated[bool, typer.Option(
        "--save/--no-save", rich_help_panel=o.OUTPUT_PANEL,
        help="Store the result for the model, for later runs (--no-save: only print it).")] = True,
    forget: Annotated[bool, typer.Option(
        "--forget", rich_help_panel=o.OUTPUT_PANEL,
        help="Remove the calibration stored for --model (later runs use the family's default again).")] = False,
    plot: Annotated[Path | None, typer.Option(
        rich_help_panel=o.OUTPUT_PANEL, show_default=False,
        help="Also write a PNG histogram of the similarities with the threshold (like the paper's Fig. 3).")] = None,
    json: o.Json = False,
    verbose: o.Verbose = False,
) -> None:
    """Measure FrameFusion's similarity threshold for a model and store it for later runs.

    For each video, every video token's cosine similarity with the same patch of the previous frame at the input of
    the first decoder layer (where merging starts); the threshold is the mean over videos of their median, the
    rule of the paper and its authors. It is stored for this model (keyed by its weights), and ask, compare,
    profile, visualize and the lmms-eval plugin use it on this model unless --similarity is given.
    """
    quiet_libraries(verbose)
    if (show or forget) and videos:
        raise typer.BadParameter("give videos to calibrate on, or --show / --forget, not both", param_hint="VIDEOS")
    if not (show or forget) and not videos:
        raise typer.BadParameter("give video files or folders to calibrate on (or --show, --forget)",
                                 param_hint="VIDEOS")
    with reported_errors(verbose):
        from framefusion.methods.framefusion.thresholds import forget_calibration, resolve_threshold, store_path
        from framefusion.pipeline.calibrate import calibrate, plot_similarities, shown_calibration, video_files

        if forget:
            loaded = open_model(model, loading)
            removed = forget_calibration(loaded.model)
            note_line(f"{'removed the' if removed else 'no'} calibration stored for {loaded.name}"
                      f"{' from ' + str(store_path()) if removed else ''}")
            return
        if show:
            loaded = open_model(model, loading)
            stored, threshold = shown_calibration(loaded), resolve_threshold(loaded.model)
            if json:
                emit_json({"model": loaded.name, "stored": stored, "threshold": threshold.value,
                           "threshold_source": threshold.describe(), "store": str(store_path())})
            elif stored is None:
                stdout_console().print(f"no calibration stored for {loaded.name}; runs use {threshold.value:g} "
                                       f"({threshold.describe()})", soft_wrap=True, highlight=False)
            else:
                stdout_console().print(calibration_table(loaded.name, stored))
            return
        files = video_files(videos)
        frames_from = sampling(video_sampling)
        loaded = open_model(model, loading)
        with progress(stderr_console()) as bar:
            task = bar.add_task("Calibrating", total=len(files))

            def advance(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, description=f"Calibrating: {Path(name).name}")

            result = calibrate(loaded, files, frames_from, save=save, on_video=advance,
                               on_skip=lambda name, why: note_line(f"warning: skipped {name}: {why}"))
        if plot is not None:
            plot_similarities(result, plot)
        if json:
            emit_json({**result.to_json(), "store": str(store_path()) if save else None})
        else:
            stdout_console().print(calibration_table(loaded.name, result.record()))
            where = f"stored for {loaded.name} in {store_path()}" if save else "not stored (--no-save)"
            note_line(where + (f"; wrote {plot}" if plot else ""))
