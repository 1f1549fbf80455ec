"""The `framefusion` command: ask, compare, profile, visualize."""

from __future__ import annotations

import sys


def _interrupted() -> None:
    """Ctrl-C outside a command's own error handling: the same one line and exit code 130 as inside it."""
    sys.stderr.write("framefusion: error: interrupted\n")
    sys.exit(130)


try:  # importing torch takes seconds: Ctrl-C meanwhile ends as quietly as it does later
    import typer

    from ffcli.ask import ask_command
    from ffcli.compare import compare_command
    from ffcli.errors import OneLineErrors
    from ffcli.profile import profile_command
    from ffcli.visualize import visualize_command
except KeyboardInterrupt:
    _interrupted()

app = typer.Typer(
    name="framefusion",
    cls=OneLineErrors,
    help="Faster video LLMs: remove redundant video tokens inside the LLM (FrameFusion), measure what it changes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ask")(ask_command)
app.command("compare")(compare_command)
app.command("profile")(profile_command)
app.command("visualize")(visualize_command)


def main() -> None:
    """The console entry point: the app, with Ctrl-C outside a command's own handling (while Typer builds the
    command line, say) ending as quietly as inside it."""
    try:
        app()
    except KeyboardInterrupt:
        _interrupted()


if __name__ == "__main__":
    main()
