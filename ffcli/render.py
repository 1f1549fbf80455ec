"""Output for people (Rich tables, progress, summary lines) and for scripts (one JSON object), from result objects."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the heavy modules load with the command that needs them
    from framefusion.pipeline import AskResult
    from framefusion.pipeline.compare import CompareResult
    from framefusion.pipeline.evaluation import MethodScore
    from framefusion.pipeline.profiling import ProfileRun
    from framefusion.pipeline.session import SessionAnswer


PIPE_WIDTH = 160  # tables written to a file or pipe are not squeezed to 80 columns


def stdout_console() -> Console:
    """Rich console on stdout (tables and results)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def stderr_console() -> Console:
    """Rich console on stderr (progress, notices)."""
    return Console(stderr=True)


def emit_json(payload: dict[str, Any]) -> None:
    """Write exactly one JSON object on one line (non-finite numbers as null) on stdout."""
    sys.stdout.write(json.dumps(_finite(payload)) + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class DelayedProgress:
    """A progress bar for work that is usually quick: it appears only once the work has taken `delay` seconds."""

    def __init__(self, console: Console, description: str, delay: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.description, self.delay, self.clock = console, description, delay, clock
        self.started = clock()
        self.bar: Progress | None = None
        self.task = None

    def update(self, done: int, total: int) -> None:
        """Report `done` of `total` units; starts showing the bar after `delay` seconds."""
        if self.bar is None:
            if self.clock() - self.started < self.delay:
                return
            self.bar = progress(self.console)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self) -> "DelayedProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress(console: Console, *, bar: bool = True) -> Progress:
    """A transient progress display on stderr; silent when stderr is not a terminal."""
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if bar:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


# ---------------------------------------------------------------- units


def seconds(value: float) -> str:
    """Three significant digits: 0.0123 -> '12.3 ms', 0.123 -> '123 ms', 1.5 -> '1.50 s'."""
    if not math.isfinite(value):
        return "-"
    return _three_digits(value * 1000, "ms") if abs(value) < 1 else _three_digits(value, "s")


def size(num_bytes: int) -> str:
    """Bytes in binary units, three significant digits: 1536 -> '1.50 KiB', 900e6 -> '858 MiB'."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1000 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else _three_digits(value, unit)
        value /= 1024
    return _three_digits(value, "GiB")


def _three_digits(value: float, unit: str) -> str:
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def times(value: float) -> str:
    """A speed-up factor: 2.345 -> '2.35x'."""
    return f"{value:.2f}x" if math.isfinite(value) else "-"


# ---------------------------------------------------------------- ask


def ask_summary(result: AskResult) -> str:
    """The one-line summary printed after a streamed answer."""
    t = result.timings
    return (f"{result.frames} frames · {result.vision_tokens} vision tokens · {result.method} at budget "
            f"{result.budget:g}: kept_ratio {result.kept_ratio:.3f}{_prefill_note(result.kept_ratio, result.prefill_ratio)} · video {seconds(t.video_s)} · processor "
            f"{seconds(t.processor_s)} · vision {seconds(t.vision_s)} · prefill {seconds(t.prefill_s)} · decode "
            f"{seconds(t.decode_s)} ({result.generated_tokens} tokens) · total {seconds(t.total_s)} · "
            f"peak memory {size(result.peak_memory_bytes)}{_threshold_note(result)}")


def session_summary(answer: SessionAnswer) -> str:
    """The summary line of a session's answer: ask's, then what it reused and about how much that saved."""
    return f"{ask_summary(answer)} · {answer.reuse.summary()}"


def _threshold_note(result: AskResult) -> str:
    """' · similarity 0.5 (family default)' for FrameFusion runs."""
    if result.similarity_threshold is None:
        return ""
    return f" · similarity {result.similarity_threshold:g} ({(result.threshold_source or '').split(':')[0]})"


def _prefill_note(kept_ratio: float, prefill_ratio: float) -> str:
    """' (prefill ran 0.417)' where the prefill ran more video tokens than the cache kept (DyCoke, StreamingLLM)."""
    return f" (prefill ran {prefill_ratio:.3f})" if abs(prefill_ratio - kept_ratio) > 5e-4 else ""


# ---------------------------------------------------------------- compare


def compare_table(comparison: CompareResult) -> Table:
    """Methods side by side with their agreement with dense."""
    rows = []
    for result in comparison.results:
        agree = comparison.agreement[result.method]
        answer = _printable(result.answer) or "[dim](empty)[/dim]"
        rows.append([result.method, answer, seconds(result.time_to_first_token_s), seconds(result.timings.total_s),
                     size(result.peak_memory_bytes), f"{result.kept_ratio:.3f}", f"{result.prefill_ratio:.3f}",
                     _mark(agree.first_token_match),
                     f"{agree.kl_divergence:.4f}", _mark(agree.exact_match)])
    return _table("Methods on the same frames and question (agreement: with dense)",
                  ["method", "answer", "TTFT", "total", "peak mem", "kept", "prefill", "top-1", "KL", "same answer"],
                  rows,
                  caption="kept: kept_ratio, video tokens in the KV cache; prefill: prefill_ratio, video tokens the "
                          "prefill ran (both mean over layers, over dense). TTFT: time to first token (vision + "
                          "prefill). top-1: same first token as dense. "
                          "KL: KL(dense ‖ method) of the first-token distributions, nats.",
                  squeeze="answer")


def scores_table(scores: Sequence[MethodScore], dataset: str) -> Table:
    """Accuracy per method on a dataset, with per-task accuracy when the items name tasks."""
    tasks = sorted({task for score in scores for task in score.per_task})
    rows = [[score.method, f"{score.budget:g}", f"{score.accuracy:.1%}", f"{score.correct}/{score.total}",
             f"{score.kept_ratio:.3f}", f"{score.prefill_ratio:.3f}", *(f"{score.per_task[t]:.1%}" if t in score.per_task else "-" for t in tasks)]
            for score in scores]
    return _table(f"Accuracy on {dataset}", ["method", "budget", "accuracy", "correct", "kept", "prefill", *tasks],
                  rows)


def _printable(text: str) -> str:
    """One line without control characters, markup escaped: safe inside a table cell."""
    visible = "".join(ch for ch in " ".join(text.split()) if unicodedata.category(ch)[0] != "C")
    return escape(visible)


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]no[/red]"


# ---------------------------------------------------------------- profile


def profile_table(runs: Sequence[ProfileRun]) -> Table:
    """Fig. 8 as a table: time per component, measured and ideal speed-ups, KV cache and peak memory."""
    rows = [[run.method, f"{run.budget:g}", str(run.frames), str(run.vision_tokens), f"{run.kept_ratio:.3f}",
             seconds(run.video_s + run.processor_s), seconds(run.vision_s), seconds(run.prefill_s),
             seconds(run.decode_per_token_s), seconds(run.total_s), times(run.speedup_prefill),
             times(run.ideal_speedup), times(run.speedup_end_to_end), size(run.kv_cache_bytes),
             size(run.peak_memory_bytes)] for run in runs]
    return _table("Runtime and memory breakdown (medians)",
                  ["method", "budget", "frames", "vision tokens", "kept", "video", "vision", "prefill",
                   "decode / token", "total", "prefill ×", "ideal ×", "e2e ×", "KV cache", "peak mem"], rows,
                  caption="video: decoding, sampling and the processor; vision: vision encoder; prefill: LLM "
                          "prefill; total: the whole request; prefill × and e2e ×: measured speed-ups over dense at "
                          "the same frame count; ideal ×: the paper's FLOP cost model for the prefill.")


# ---------------------------------------------------------------- calibrate


def _similarity(value: float) -> str:
    """A cosine similarity with four decimals, or six near 1, where four would print every value as 1.0000."""
    return f"{value:.6f}" if value > 0.9995 else f"{value:.4f}"


def calibration_table(model: str, record: dict[str, Any]) -> Table:
    """Per-video median similarities and the threshold (their mean) of a calibration record."""
    medians = record.get("medians") or {}
    rows = [[escape(_printable(str(video))), _similarity(median)] for video, median in medians.items()]
    rows.append(["[bold]threshold (mean of the medians)[/bold]", f"[bold]{_similarity(record['threshold'])}[/bold]"])
    caption = (f"{record.get('videos', len(medians))} videos, {record.get('frames', '?')} frames each; "
               f"measured {record.get('created', '')}")
    return _table(f"Similarity threshold for {escape(model)}", ["video", "median similarity"], rows,
                  caption=caption, squeeze="video")


# ---------------------------------------------------------------- tables


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *, caption: str | None = None,
           squeeze: str | None = None) -> Table:
    """A light table whose values never wrap (headers may); the free-text `squeeze` column is cut with an ellipsis."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True, padding=(0, 1))
    for index, header in enumerate(headers):
        widest = max((Text.from_markup(row[index]).cell_len for row in rows), default=0)
        if header == squeeze:
            table.add_column(header, max_width=max(12, min(widest, 40)), overflow="ellipsis", no_wrap=True)
        else:
            table.add_column(header, justify="left" if index == 0 else "right", min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table
