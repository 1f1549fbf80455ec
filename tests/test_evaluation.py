"""Tests for framefusion.pipeline.evaluation: dataset files, answer scoring, and scoring a (tiny, random) model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framefusion.api import reduction_description
from framefusion.pipeline.evaluation import (
    DatasetItem,
    ItemResult,
    evaluate_dataset,
    load_dataset,
    score_answer,
    summarize,
)
from framefusion.pipeline.loading import LoadedModel
from framefusion.synthetic import write_dataset

# ---------------------------------------------------------------- load_dataset


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_load_dataset_resolves_paths_against_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    jsonl = write_lines(tmp_path / "sub" / "set.jsonl", [
        {"video": "videos/a.mp4", "question": "What color?", "options": ["red", "blue"], "answer": "red",
         "task": "color"},
        "",
        {"video": str(tmp_path / "b.mp4"), "question": "Describe it.", "answer": "a cat"},
    ])
    first, second = load_dataset(jsonl)
    assert first == DatasetItem(tmp_path / "sub" / "videos" / "a.mp4", "What color?", ["red", "blue"], "red", "color")
    assert second.video == tmp_path / "b.mp4"
    assert second.options == [] and second.task is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"video": "a.mp4", "question": "q"}), "missing answer"),
        (json.dumps({"video": "a.mp4", "question": "q", "answer": "x", "options": ["y", "z"]}), "not one of the options"),
        (json.dumps({"video": "a.mp4", "question": "q", "answer": "x", "options": "x"}), "list of strings"),
    ],
)
def test_load_dataset_names_the_bad_line(tmp_path, line, message):
    good = {"video": "a.mp4", "question": "q", "answer": "a"}
    jsonl = write_lines(tmp_path / "set.jsonl", [good, line])
    with pytest.raises(ValueError, match=rf"set\.jsonl:2: .*{message}"):
        load_dataset(jsonl)


def test_load_dataset_rejects_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no items"):
        load_dataset(write_lines(tmp_path / "empty.jsonl", [""]))


# ---------------------------------------------------------------- score_answer

COLORS = ["red", "green", "blue"]


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("red", True),
        ("Red.", True),
        ("The square is red", True),
        ("  RED!\n", True),
        ("blue", False),
        ("red or blue", False),  # names two options
        ("reddish", False),  # not the whole word
        ("", False),
    ],
)
def test_score_answer_with_options(prediction, expected):
    assert score_answer(prediction, "red", COLORS) is expected


def test_score_answer_prefers_the_longer_option_it_names():
    options = ["red", "dark red"]
    assert score_answer("dark red", "dark red", options)
    assert not score_answer("dark red", "red", options)


def test_score_answer_without_options_is_normalised_exact_match():
    assert score_answer("A cat, sleeping.", "a cat sleeping", [])
    assert not score_answer("a cat", "a cat sleeping", [])


# ---------------------------------------------------------------- evaluate_dataset


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_set")
    return load_dataset(write_dataset(folder, 3, seed=0, split="test", num_frames=16, size=64))


def test_summarize_counts_per_task():
    items = [DatasetItem(Path("v.mp4"), "q", [], "a", task) for task in ("color", "color", "shape", None)]
    results = [ItemResult(item, "a", correct, kept) for item, correct, kept in
               zip(items, (True, False, True, True), (1.0, 0.5, 0.5, 1.0))]
    score = summarize("m", 0.5, results)
    assert (score.correct, score.total, score.accuracy) == (3, 4, 0.75)
    assert score.per_task == {"color": 0.5, "shape": 1.0}
    assert score.kept_ratio == pytest.approx(0.75)


def test_evaluate_dataset_dense_and_framefusion(tiny_model_factory, tiny_set):
    model, processor = tiny_model_factory("qwen2_vl")
    seen = []
    dense = evaluate_dataset(LoadedModel.of(model, processor), tiny_set, method="dense", budget=1.0, num_frames=8,
                             max_new_tokens=2, on_item=seen.append)
    assert dense.total == 3 and len(seen) == 3
    assert all(isinstance(result.prediction, str) for result in seen)
    assert dense.kept_ratio == 1.0
    assert set(dense.per_task) == {"color", "shape", "position"}

    reduced = evaluate_dataset(LoadedModel.of(model, processor), tiny_set, method="framefusion", budget=0.3, num_frames=8,
                               max_new_tokens=2)
    assert reduced.kept_ratio == pytest.approx(0.3, abs=0.05)
    assert reduction_description(model) is None  # left dense


def test_evaluate_dataset_uniform_reports_kept_ratio_against_the_full_clip(tiny_model_factory, tiny_set):
    model, processor = tiny_model_factory("qwen2_vl")
    score = evaluate_dataset(LoadedModel.of(model, processor), tiny_set[:1], method="uniform", budget=0.5, num_frames=8,
                             max_new_tokens=1)
    assert score.kept_ratio == pytest.approx(0.5)


def test_evaluate_dataset_leaves_the_model_dense_after_an_error(tiny_model_factory, tmp_path):
    model, processor = tiny_model_factory("qwen2_vl")
    missing = [DatasetItem(tmp_path / "missing.mp4", "q", [], "a")]
    with pytest.raises(ValueError, match="not found"):
        evaluate_dataset(LoadedModel.of(model, processor), missing, method="framefusion", budget=0.3, num_frames=8)
    assert reduction_description(model) is None
