"""Every measurement script in benchmarks/ (and the demo's training script) starts: its imports resolve against the current tree and --help works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + [ROOT / "scripts" / "train_demo.py"]


def test_there_are_benchmark_scripts():
    assert {path.name for path in SCRIPTS} >= {"accuracy.py", "engine_speed.py", "decode_speed.py", "session_speed.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_script_prints_its_help(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
