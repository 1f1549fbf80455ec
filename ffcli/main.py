"""The `framefusion` command: ask, chat, compare, profile, visualize, calibrate."""

from __future__ import annotations

import os
import signal

INTERRUPTED_LINE = "framefusion: error: interrupted\n"  # ffcli.errors.error_line's line, before it is imported


def _exit_while_importing(signum: int, frame: object) -> None:
    """Ctrl-C while the imports run: a KeyboardInterrupt raised inside an import leaves half-initialised
    modules behind (numpy then refuses to load twice), so end the process here and now instead."""
    os.write(2, INTERRUPTED_LINE.encode())
    os._exit(130)


_inherited_sigint = signal.getsignal(signal.SIGINT)
if _inherited_sigint is signal.default_int_handler:  # not when the parent has SIGINT ignored (nohup, `cmd &`)
    signal.signal(signal.SIGINT, _exit_while_importing)  # importing torch takes seconds
import inspect  # noqa: E402
import sys  # noqa: E402

import typer  # noqa: E402

from ffcli.ask import ask_command  # noqa: E402
from ffcli.calibrate import calibrate_command  # noqa: E402
from ffcli.chat import chat_command  # noqa: E402
from ffcli.compare import compare_command  # noqa: E402
from ffcli.errors import EXIT_INTERRUPTED, OneLineErrors, error_line, watch_interrupts  # noqa: E402
from ffcli.groups import with_groups  # noqa: E402
from ffcli.profile import profile_command  # noqa: E402
from ffcli.visualize import visualize_command  # noqa: E402

watch_interrupts(_inherited_sigint)

app = typer.Typer(
    name="framefusion",
    cls=OneLineErrors,
    help="Faster video LLMs: remove redundant video tokens inside the LLM (FrameFusion), measure what it changes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def command_help(command: object) -> str:
    """A command's docstring with each paragraph on one line: Typer keeps single line breaks, so a paragraph
    wrapped in the source would print wrapped twice."""
    paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


for name, command in (("ask", ask_command), ("chat", chat_command), ("compare", compare_command),
                      ("profile", profile_command), ("visualize", visualize_command),
                      ("calibrate", calibrate_command)):
    app.command(name, help=command_help(command))(with_groups(command))


def main() -> None:
    """The console entry point: the app, with Ctrl-C outside a command's own handling (while Typer builds the
    command line, say) ending as quietly as inside it."""
    try:
        app()
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
