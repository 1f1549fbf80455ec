"""Several questions about one video from the command line: `ask -q ... -q ...` and `chat` (stdin and a
pseudo-terminal)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import CLI_ASK_KEYS, assert_one_line_error, single_json, tiny_checkpoint, video_file  # noqa: F401
from typer.testing import CliRunner

from ffcli.main import app

QUESTIONS = ("What is happening?", "What color is it?", "Describe it.")
REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_args(tiny_checkpoint) -> list[str]:  # noqa: F811
    return ["--model", str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "3"]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="framefusion", input=input,
                              env={"COLUMNS": "200"})


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert stdout.endswith("\n") and all(line.startswith("{") for line in lines), stdout
    return [json.loads(line) for line in lines]


def test_ask_answers_each_question_in_turn(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTIONS[0], "-q", QUESTIONS[1], "--question", QUESTIONS[2], *model_args)
    assert result.exit_code == 0, result.stderr
    for index, question in enumerate(QUESTIONS, start=1):
        assert f"Q{index}: {question}\n" in result.stdout
    summaries = [line for line in result.stderr.splitlines() if "vision tokens" in line]
    assert len(summaries) == 3
    assert "first question: nothing reused yet; video prefix recorded" in summaries[0]
    for summary in summaries[1:]:
        assert "reused decoded frames, vision features, video KV prefix in" in summary and "saved ≈" in summary


def test_ask_json_prints_one_record_per_question_equal_to_single_asks(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, "-q", QUESTIONS[0], "-q", QUESTIONS[1], *model_args, "--json")
    assert result.exit_code == 0, result.stderr
    records = json_lines(result.stdout)
    assert [r["question"] for r in records] == list(QUESTIONS[:2])
    assert set(records[0]) == CLI_ASK_KEYS | {"question", "reused"}
    assert records[0]["reused"]["recorded"] and not records[0]["reused"]["features_served"]
    assert records[1]["reused"]["features_served"] == 1 and records[1]["reused"]["prefix_layers"] > 0
    alone = single_json(run("ask", video_file, QUESTIONS[1], *model_args, "--json").stdout)
    assert records[1]["answer_ids"] == alone["answer_ids"] and records[1]["kept_ratio"] == alone["kept_ratio"]
    assert records[1]["tokens_per_layer"] == alone["tokens_per_layer"]


def test_ask_without_a_question_is_one_line(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, *model_args)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "Missing argument", "-q QUESTION")


def test_chat_reads_questions_until_exit(model_args, video_file):  # noqa: F811
    result = run("chat", video_file, *model_args, input=f"{QUESTIONS[0]}\n\n{QUESTIONS[1]}\nexit\n{QUESTIONS[2]}\n")
    assert result.exit_code == 0, result.stderr
    summaries = [line for line in result.stderr.splitlines() if "vision tokens" in line]
    assert len(summaries) == 2 and "reused" in summaries[1]  # the empty line is skipped, nothing after `exit`
    assert result.stderr.strip().endswith("2 questions answered; the session held " +
                                          result.stderr.strip().split("the session held ")[-1])


def test_chat_ends_at_end_of_input_and_keeps_history_only_when_asked(model_args, video_file):  # noqa: F811
    records = {}
    for history in (False, True):
        flags = ["--history"] if history else []
        result = run("chat", video_file, *model_args, *flags, "--json", input=f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n")
        assert result.exit_code == 0, result.stderr  # end of input (Ctrl-D) ends the chat
        records[history] = json_lines(result.stdout)
        assert len(records[history]) == 2
    # the same first question; with history the second prompt also holds the first turn
    assert records[False][0]["answer_ids"] == records[True][0]["answer_ids"]
    assert records[True][1]["tokens_per_layer"][0] > records[False][1]["tokens_per_layer"][0]
    assert records[True][1]["reused"]["prefix_layers"] > 0


def test_chat_under_a_terminal(tiny_checkpoint, video_file):  # noqa: F811
    """A real process on a pseudo-terminal: the prompt shows, an answer and its summary follow, Ctrl-D ends it."""
    main, child = os.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "ffcli.main", "chat", str(video_file), "--model",
                                str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "2"],
                               stdin=child, stdout=child, stderr=child, env=env, cwd=REPOSITORY, close_fds=True)
    os.close(child)
    seen = b""

    def read_until(marker: bytes, count: int = 1, timeout_s: float = 180.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout_s
        while seen.count(marker) < count:
            if time.monotonic() > deadline or process.poll() is not None:
                break
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert seen.count(marker) >= count, seen.decode(errors="replace")

    try:
        read_until("you ›".encode())
        os.write(main, f"{QUESTIONS[0]}\n".encode())
        read_until("you ›".encode(), count=2)
        os.write(main, b"\x04")  # Ctrl-D at an empty prompt
        read_until(b"1 question answered")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    text = seen.decode(errors="replace")
    assert QUESTIONS[0] in text  # the terminal echoed what was typed
    assert "vision tokens" in text and "first question: nothing reused yet" in text
