"""Every failure ends as one line on stderr and a non-zero exit; --verbose adds the traceback."""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import typer
from typer.core import TyperGroup

from framefusion.pipeline.loading import ModelLoadError

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
OOM_HINT = "out of memory: try fewer --frames, a lower --budget, or --dtype bf16/fp16 on a GPU"
INTERRUPT_SEEN = threading.Event()  # set by the first Ctrl-C; cleared only by tests


def _note_and_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: remember it, then raise KeyboardInterrupt as Python's own handler does."""
    INTERRUPT_SEEN.set()
    raise KeyboardInterrupt


def watch_interrupts(inherited: object) -> None:
    """Handle SIGINT with `_note_and_interrupt` if the process inherited Python's default handler, else keep
    what it inherited (a parent that ignores SIGINT, as `nohup` and background jobs do, is obeyed).

    A library that catches the KeyboardInterrupt and raises something else instead (an error from a
    context manager's cleanup, say) would otherwise turn Ctrl-C into an unrelated failure and exit 1."""
    signal.signal(signal.SIGINT, _note_and_interrupt if inherited is signal.default_int_handler else inherited)


def error_line(message: str) -> None:
    """Print `framefusion: error: <message>` as a single line on stderr."""
    text = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"framefusion: error: {text}\n")
    sys.stderr.flush()


def note_line(message: str) -> None:
    """Print `framefusion: <message>` on stderr (notices that are not errors)."""
    sys.stderr.write(f"framefusion: {message}\n")
    sys.stderr.flush()


class OneLineErrors(TyperGroup):
    """The command group: usage errors (bad options, missing arguments) as one line instead of a panel, and
    the one place that reports Ctrl-C (Typer turns a KeyboardInterrupt anywhere in a command into exit 130)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:
            if not standalone_mode:
                raise
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            error_line(f"{error.format_message()}{hint}")
            sys.exit(getattr(error, "exit_code", EXIT_USAGE))
        except typer.Abort:
            if not standalone_mode:
                raise
            code = EXIT_INTERRUPTED
        except Exception:
            if not INTERRUPT_SEEN.is_set():
                raise
            code = EXIT_INTERRUPTED  # whatever the interrupted code raised on its way out
        if code == EXIT_INTERRUPTED:
            error_line("interrupted")
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def describe(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an exception raised while a command runs."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(error).lower():
        return OOM_HINT, EXIT_FAILURE
    if isinstance(error, (ModelLoadError, ValueError, OSError)):  # VideoError, UnsupportedModelError: ValueErrors
        return str(error), EXIT_FAILURE
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first} (run with --verbose for the traceback)", EXIT_FAILURE


@contextmanager
def reported_errors(verbose: bool = False) -> Iterator[None]:
    """Turn any exception in the block into one stderr line and an exit code (traceback first when verbose).

    Ctrl-C passes through (after the traceback when verbose): OneLineErrors reports it, wherever it lands.
    So does any exception raised after a Ctrl-C: it is the interruption's doing, not a failure to report.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        raise
    except Exception as error:  # noqa: BLE001 - the CLI's last line of defence
        if verbose:
            traceback.print_exc()
        if INTERRUPT_SEEN.is_set():
            raise typer.Exit(EXIT_INTERRUPTED) from None
        message, code = describe(error)
        error_line(message)
        raise typer.Exit(code) from None
