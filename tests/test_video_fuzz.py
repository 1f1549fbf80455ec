"""Damaged files: several hundred mutants of generated videos, both decoders, each loads or raises VideoError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZER = Path(__file__).with_name("video_fuzz.py")
MUTANTS = 300


@pytest.mark.parametrize("decoder", ["av", pytest.param("decord", marks=pytest.mark.decord)])
def test_every_damaged_file_loads_or_raises_video_error_naming_it(decoder, tmp_path):
    done = subprocess.run([sys.executable, str(FUZZER), str(tmp_path), "--decoder", decoder, "--mutants",
                           str(MUTANTS), "--seed", "7"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # a crash inside FFmpeg shows here
    report = json.loads(done.stdout)
    assert report["failures"] == [], report
    assert set(report["counts"]) <= {"loaded", "VideoError"} and sum(report["counts"].values()) == MUTANTS
    assert report["counts"].get("VideoError", 0) > 0 and report["counts"].get("loaded", 0) > 0  # both happen
    assert done.stderr.strip() == "", done.stderr[-2000:]  # no FFmpeg log lines leak to stderr


def test_verbose_shows_ffmpeg_log_lines_and_still_never_hangs(tmp_path):
    """The same damaged files with FFmpeg's log lines on (the CLI's --verbose): they reach stderr, nothing hangs."""
    done = subprocess.run([sys.executable, str(FUZZER), str(tmp_path), "--decoder", "av", "--mutants",
                           str(MUTANTS), "--seed", "7", "--verbose"], capture_output=True, text=True,
                          errors="replace", timeout=600)  # FFmpeg may quote the damaged bytes
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["failures"] == [], report
    assert done.stderr.strip() != ""  # FFmpeg's own complaints about the damage
