"""The installed `framefusion` console script, run as a user would: one real process per command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import (  # noqa: F401
    CLI_ASK_KEYS,
    MODEL_KEYS,
    PROFILE_RUN_KEYS,
    VISUALIZE_FILES,
    assert_one_line_error,
    single_json,
    tiny_checkpoint,
    video_file,
)
from PIL import Image

TIMEOUT_S = 240


def console_script() -> str:
    """The `framefusion` script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "framefusion"
    found = str(beside) if beside.is_file() else shutil.which("framefusion")
    if found is None:
        pytest.skip("the framefusion console script is not installed (pip install -e .)")
    return found


def framefusion(*args) -> subprocess.CompletedProcess:
    """Run the console script offline and capture its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    return subprocess.run([console_script(), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> list[str]:  # noqa: F811
    return ["--model", str(tiny_checkpoint), "--device", "cpu"]


def test_ask(model, video_file):  # noqa: F811
    result = framefusion("ask", video_file, "What is happening?", *model, "--max-new-tokens", "2", "--json")
    assert result.returncode == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == CLI_ASK_KEYS and payload["frames"] == 8 and payload["vision_tokens"] == 64
    assert set(payload["model_info"]) == MODEL_KEYS and payload["model_info"]["weights"] == "loaded"


def test_ask_timings_add_up_to_the_request(model, video_file):  # noqa: F811
    """The parts (video, processor, vision, prefill, decode) cover the measured wall time of the request."""
    started = time.time()
    result = framefusion("ask", video_file, "What is happening?", *model, "--max-new-tokens", "8", "--json")
    wall_s = time.time() - started  # the whole process, seen from outside
    assert result.returncode == 0, result.stderr
    payload = single_json(result.stdout)
    timings = payload["timings"]
    parts = sum(timings[key] for key in ("video_s", "processor_s", "vision_s", "prefill_s", "decode_s"))
    assert timings["video_s"] > 0 and timings["processor_s"] > 0
    assert abs(parts - timings["total_s"]) <= 0.05 * timings["total_s"], timings
    # start-up (interpreter, imports, model load) comes before the request, and both fit in the process's life
    assert 0 < payload["startup_s"] and payload["startup_s"] + timings["total_s"] <= wall_s, (payload, wall_s)


def test_compare(model, video_file):  # noqa: F811
    result = framefusion("compare", video_file, "What is happening?", *model, "--max-new-tokens", "2")
    assert result.returncode == 0, result.stderr
    assert "dense" in result.stdout and "framefusion" in result.stdout and "KL" in result.stdout


def test_profile(model, video_file, tmp_path):  # noqa: F811
    result = framefusion("profile", video_file, *model, "--frames", "4", "--repeats", "1", "--warmup", "0",
                         "--max-new-tokens", "2", "--json", "--plot", tmp_path / "profile.png")
    assert result.returncode == 0, result.stderr
    payload = single_json(result.stdout)
    assert [r["method"] for r in payload["runs"]] == ["dense", "framefusion"]
    assert all(set(r) == PROFILE_RUN_KEYS for r in payload["runs"])
    with Image.open(tmp_path / "profile.png") as image:
        assert image.format == "PNG"


def test_visualize(model, video_file, tmp_path):  # noqa: F811
    result = framefusion("visualize", video_file, *model, "--out", tmp_path / "vis")
    assert result.returncode == 0, result.stderr
    for name in VISUALIZE_FILES:
        assert name in result.stdout
        with Image.open(tmp_path / "vis" / name) as image:
            assert image.format == "PNG" and image.width >= 400


def wait_for_our_code(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Return once the process has left the interpreter's own start-up and runs the CLI's code (it is importing
    torch, which only the CLI imports). A SIGINT before that lands in Python's site import, which no program
    can handle; a fixed delay from Popen can land there on a loaded machine. Without /proc: half a second."""
    maps = Path(f"/proc/{process.pid}/maps")
    if not maps.exists():
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if "libtorch" in maps.read_text():
                return
        except OSError:  # it has just exited
            return
        time.sleep(0.01)


def sigint_default() -> None:
    """In the child before exec: SIGINT as a terminal gives it, whatever this pytest inherited (a CI runner
    started in the background ignores it, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_long_profile(model: list[str], sigint=sigint_default) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([console_script(), "profile", *model, "--repeats", "100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """stdout and stderr once it has ended; a process still running after TIMEOUT_S is killed, and fails."""
    try:
        return process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"still running {TIMEOUT_S} s after SIGINT; stderr: {stderr[-2000:]}")


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("delay_s", [0.0, 2.0, 6.0])  # importing torch; the other imports; the clip, loading, work
def test_ctrl_c_ends_cleanly(model, delay_s):
    """SIGINT while starting up or working: one line, exit 130, no traceback."""
    process = start_long_profile(model)
    wait_for_our_code(process)
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    stdout, stderr = finish(process)
    assert (process.returncode, stdout) == (130, ""), stderr
    assert_one_line_error(stderr, "interrupted")


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_an_ignored_sigint_stays_ignored(model):
    """A parent that ignores SIGINT (nohup, `cmd &` in a script) is obeyed while importing and while working."""
    process = start_long_profile(model, sigint=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for_our_code(process)
    for pause_s in (6.0, 1.0):  # once while importing, once 6 s on (after the imports, unless the machine is slow)
        process.send_signal(signal.SIGINT)
        time.sleep(pause_s)
    still_running = process.poll() is None
    process.kill()
    process.communicate(timeout=TIMEOUT_S)
    assert still_running
