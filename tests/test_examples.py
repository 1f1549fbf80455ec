"""The examples run as a user runs them, in a fresh process, and print what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framefusion.methods import method_names

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_python_api_example():
    out = run_example("python_api.py")
    kept = float(out.split("kept_ratio): ")[1].split()[0])
    assert abs(kept - 0.3) <= 0.05 and "dense answer ids:" in out and "FrameFusion answer ids:" in out


@pytest.mark.slow
def test_methods_example_prints_every_method_on_budget():
    out = run_example("methods_at_a_budget.py", "0.3")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    assert list(rows) == method_names()
    assert rows["dense"][1] == "4/4"  # the demo model answers these four
    for method, row in rows.items():
        kept, prefill = float(row[2]), float(row[3])
        if method != "dense":
            assert abs(kept - 0.3) <= 0.05, (method, kept)
        assert prefill >= kept - 1e-9
