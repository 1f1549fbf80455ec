"""The built-in demo model: packaged files, offline loading, and its accuracy on a fixed held-out slice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest

from framefusion.demo import (
    DEMO_MAX_NEW_TOKENS,
    DEMO_NUM_FRAMES,
    DEMO_SOURCE_FPS,
    DEMO_SOURCE_FRAMES,
    DEMO_SOURCE_SIZE,
    demo_model_path,
    load_demo,
)
from framefusion.pipeline.evaluation import evaluate_dataset, load_dataset
from framefusion.pipeline.loading import LoadedModel
from framefusion.synthetic import write_dataset
from scripts.train_demo import ModelSize

SLICE = 40  # the first 40 questions of the benchmark's held-out set (split test, seed 0): 8 per task
MARGIN = 0.10  # binomial noise of 40 questions around the recorded accuracy is about 3 points


@pytest.fixture(scope="module")
def record() -> dict:
    """training.json, written next to the weights by scripts/train_demo.py."""
    return json.loads((demo_model_path() / "training.json").read_text())


@pytest.fixture(scope="module")
def demo():
    return load_demo()


@pytest.fixture(scope="module")
def heldout_slice(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heldout")
    return load_dataset(write_dataset(folder, SLICE, seed=0, split="test", num_frames=DEMO_SOURCE_FRAMES,
                                      size=DEMO_SOURCE_SIZE, fps=DEMO_SOURCE_FPS))


def test_demo_files_are_flat_package_data_under_25_mb():
    folder = demo_model_path()
    files = list(folder.iterdir())
    assert all(path.is_file() for path in files), "pyproject packages only demo_model/* (no subfolders)"
    names = {path.name for path in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= names
    assert any("processor" in name for name in names)
    assert sum(path.stat().st_size for path in files) <= 25 * 1024 * 1024


def test_demo_loads_offline_in_a_fresh_process(tmp_path):
    script = (
        "from framefusion.demo import load_demo\n"
        "model, processor = load_demo()\n"
        "print(model.config.model_type, next(model.parameters()).dtype, type(processor).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["qwen2_vl", "torch.float32", "Qwen2VLProcessor"]


def test_shipped_demo_is_what_the_training_script_builds_by_default(demo, record):
    model, _ = demo
    defaults = json.loads(json.dumps(asdict(ModelSize())))  # tuples as JSON lists
    assert record["model"] == defaults  # the README's command (default sizes) reproduces the shipped model
    rope = model.config.text_config.rope_parameters
    assert rope["rope_theta"] == defaults["rope_theta"] and rope["mrope_section"] == defaults["mrope_section"]
    assert model.config.text_config.num_hidden_layers == defaults["num_layers"]
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]


def test_demo_answers_the_heldout_slice_at_its_recorded_accuracy(demo, heldout_slice, record):
    model, processor = demo
    recorded = record["heldout"]["dense@1"]["accuracy"]
    score = evaluate_dataset(LoadedModel.of(model, processor), heldout_slice, method="dense", budget=1.0,
                             num_frames=DEMO_NUM_FRAMES, max_new_tokens=DEMO_MAX_NEW_TOKENS)
    assert score.total == SLICE
    assert score.accuracy >= recorded - MARGIN, score
    assert score.per_task["color"] >= 0.875, score  # 7 of 8 colour needles at least


@pytest.mark.parametrize("num_frames", [12, 20])
def test_demo_answers_colour_a_few_frames_off_its_training_count(num_frames, demo, heldout_slice):
    """Trained at 16 frames only (the README says why), the demo still reads the colour needles at 12 and 20 frames;
    the spatial and temporal tasks are not expected to hold there (measured: 75 % and 57.5 % overall)."""
    model, processor = demo
    score = evaluate_dataset(LoadedModel.of(model, processor), heldout_slice, method="dense", budget=1.0,
                             num_frames=num_frames, max_new_tokens=DEMO_MAX_NEW_TOKENS)
    assert score.per_task["color"] >= 0.875, score


def test_demo_still_answers_most_questions_under_framefusion(demo, heldout_slice, record):
    model, processor = demo
    recorded = record["heldout"]["dense@1"]["accuracy"]
    score = evaluate_dataset(LoadedModel.of(model, processor), heldout_slice, method="framefusion", budget=0.3,
                             num_frames=DEMO_NUM_FRAMES, max_new_tokens=DEMO_MAX_NEW_TOKENS)
    assert score.kept_ratio == pytest.approx(0.3, abs=0.02)
    assert score.accuracy >= recorded - 1.5 * MARGIN, score
