"""Tests for framefusion.synthetic: answers right by construction, seeds, splits and files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from framefusion.synthetic import (
    ANSWERS,
    BLOB_COLORS,
    COLORS,
    SHAPES,
    TASKS,
    SyntheticSample,
    make_dataset,
    make_sample,
    shape_masks,
    write_dataset,
)
from framefusion.video import load_video

FRAMES, SIZE = 16, 64  # small clips keep the tests fast


def color_mask(frames: np.ndarray, color: str, tolerance: int = 30) -> np.ndarray:
    """Pixels [T, H, W] within `tolerance` of a needle colour on every channel."""
    target = np.array(COLORS[color], dtype=np.int16)
    return (np.abs(frames.astype(np.int16) - target) <= tolerance).all(axis=-1)


def visible_frames(frames: np.ndarray, color: str) -> list[int]:
    """Indices of the frames showing a needle colour."""
    return np.flatnonzero(color_mask(frames, color).any(axis=(1, 2))).tolist()


def centroid(mask: np.ndarray) -> np.ndarray:
    """(y, x) centre of the true pixels of mask [H, W]."""
    return np.argwhere(mask).mean(axis=0)


def sample(task: str, answer: str, seed: int = 0, **kwargs) -> SyntheticSample:
    """A small sample with a chosen answer."""
    return make_sample(task, seed, num_frames=FRAMES, size=SIZE, answer=answer, **kwargs)


# ---------------------------------------------------------------- palette and drawing


def test_needle_colors_are_far_from_blob_colors():
    needles = np.array(list(COLORS.values()), dtype=int)  # [C, 3]
    blobs = np.array(BLOB_COLORS, dtype=int)  # [B, 3]
    distance = np.abs(needles[:, None] - blobs[None]).max(axis=-1)  # [C, B] max over channels
    assert distance.min() >= 60


@pytest.mark.parametrize("shape, fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shape_masks_fill_their_box(shape, fill):
    masks = shape_masks(shape, np.array([[50.0, 50.0], [30.0, 60.0]]), 40, 100)  # [2, 100, 100]
    assert masks.shape == (2, 100, 100)
    assert masks[0].sum() / 40**2 == pytest.approx(fill, abs=0.04)
    assert centroid(masks[1])[1] == pytest.approx(59.5, abs=0.6)  # x centre; pixel centres at +0.5


def test_shape_masks_rejects_unknown_shape():
    with pytest.raises(ValueError, match="unknown shape"):
        shape_masks("star", np.zeros((1, 2)), 10, 32)


# ---------------------------------------------------------------- answers by construction


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("color", list(COLORS))
def test_color_needle_visible_only_in_its_span(color, seed):
    item = sample("color", color, seed)
    start, end = item.meta["span"]
    assert item.answer == color and item.answer in item.options
    assert item.question == "What color is the square?"
    assert end - start >= 3
    assert visible_frames(item.frames, color) == list(range(start, end))
    side = item.meta["side"]
    assert side >= SIZE / 6
    assert color_mask(item.frames[start], color).sum() >= side**2
    for other in COLORS:  # no other needle colour anywhere: background and blobs are muted
        if other != color:
            assert visible_frames(item.frames, other) == []


@pytest.mark.parametrize("shape, fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shape_needle_has_its_shape(shape, fill):
    for seed in range(3):
        item = sample("shape", shape, seed)
        start, _ = item.meta["span"]
        mask = color_mask(item.frames[start], item.meta["color"])
        rows, cols = np.nonzero(mask)
        box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert item.meta["shape"] == shape == item.answer
        assert mask.sum() / box == pytest.approx(fill, abs=0.1)


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_position_needle_is_in_its_half(side):
    for seed in range(4):
        item = sample("position", side, seed)
        start, _ = item.meta["span"]
        mask = color_mask(item.frames[start], item.meta["color"])
        y, x = np.argwhere(mask).T
        middle = SIZE / 2
        inside = {
            "left": x < middle, "right": x >= middle, "top": y < middle, "bottom": y >= middle
        }
        assert inside[side].all()
        pair = ["left", "right"] if side in ("left", "right") else ["top", "bottom"]
        assert item.options == pair
        assert item.answer == side


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_direction_object_moves_that_way(direction):
    for seed in range(3):
        item = sample("direction", direction, seed)
        start, end = item.meta["span"]
        color = item.meta["color"]
        assert visible_frames(item.frames, color) == list(range(start, end))
        moved = centroid(color_mask(item.frames[end - 1], color)) - centroid(
            color_mask(item.frames[start], color)
        )  # (dy, dx)
        expected = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[direction]
        along = moved @ np.array(expected)
        assert along > SIZE / 4
        assert abs(moved @ np.array(expected[::-1])) < 2  # no sideways drift
        assert color in item.question and item.meta["shape"] in item.question


@pytest.mark.parametrize("first", list(COLORS))
def test_order_first_color_appears_first(first):
    item = sample("order", first)
    earlier, later = item.meta["colors"]
    assert earlier == first == item.answer
    assert sorted(item.options) == sorted([earlier, later]) and earlier != later
    assert f"{item.options[0]} or {item.options[1]}" in item.question
    shown_first = visible_frames(item.frames, earlier)
    shown_later = visible_frames(item.frames, later)
    assert len(shown_first) >= 3 and len(shown_later) >= 3
    assert max(shown_first) < min(shown_later)


def test_every_task_answer_is_among_its_options():
    for task in TASKS:
        for answer in ANSWERS[task]:
            item = make_sample(task, 7, num_frames=8, size=32, answer=answer)
            assert item.answer in item.options and item.task == task
            assert item.frames.shape == (8, 32, 32, 3) and item.frames.dtype == np.uint8


# ---------------------------------------------------------------- seeds, splits, balance


def test_same_seed_same_sample():
    a = make_sample("order", 5, num_frames=FRAMES, size=SIZE)
    b = make_sample("order", 5, num_frames=FRAMES, size=SIZE)
    c = make_sample("order", 6, num_frames=FRAMES, size=SIZE)
    assert np.array_equal(a.frames, b.frames) and a.question == b.question and a.meta == b.meta
    assert not np.array_equal(a.frames, c.frames)


def test_make_sample_accepts_a_generator():
    item = make_sample("shape", np.random.default_rng(1), num_frames=FRAMES, size=SIZE)
    assert "seed" not in item.meta and item.answer in SHAPES


def test_sample_seed_in_meta_regenerates_it():
    item = make_dataset(7, seed=3, num_frames=FRAMES, size=SIZE)[6]
    again = make_sample(
        item.task, item.meta["seed"], num_frames=FRAMES, size=SIZE, answer=item.answer
    )
    assert np.array_equal(item.frames, again.frames)


def test_dataset_is_deterministic_and_balanced():
    n = 2 * 5 * 6  # tasks x most answers, twice
    first = make_dataset(n, seed=11, num_frames=FRAMES, size=SIZE)
    again = make_dataset(n, seed=11, num_frames=FRAMES, size=SIZE)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(first, again))
    assert Counter(item.task for item in first) == {task: n // 5 for task in TASKS}
    for task in TASKS:
        answers = Counter(item.answer for item in first if item.task == task)
        assert set(answers) == set(ANSWERS[task])
        assert max(answers.values()) - min(answers.values()) <= 1


def test_dataset_task_subset():
    items = make_dataset(6, num_frames=FRAMES, size=SIZE, tasks=["color", "order"])
    assert [item.task for item in items] == ["color", "order"] * 3


def test_train_and_test_never_share_a_sample():
    train = make_dataset(10, seed=0, split="train", num_frames=FRAMES, size=SIZE)
    test = make_dataset(10, seed=0, split="test", num_frames=FRAMES, size=SIZE)
    train_seeds = {tuple(item.meta["seed"]) for item in train}
    test_seeds = {tuple(item.meta["seed"]) for item in test}
    assert not train_seeds & test_seeds
    assert {seed[0] for seed in train_seeds} == {0} and {seed[0] for seed in test_seeds} == {1}
    for a in train:
        for b in test:
            assert not np.array_equal(a.frames, b.frames)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "count"}, "unknown task"),
        ({"task": "color", "answer": "circle"}, "cannot answer"),
        ({"task": "color", "num_frames": 4}, "num_frames"),
        ({"task": "color", "size": 63}, "size"),
        ({"task": "color", "size": 16}, "size"),
    ],
)
def test_make_sample_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sample(**kwargs)


def test_make_dataset_rejects_unknown_split_and_task():
    with pytest.raises(ValueError, match="unknown split"):
        make_dataset(1, split="validation")
    with pytest.raises(ValueError, match="unknown task"):
        make_dataset(1, tasks=["color", "count"])


def test_many_small_samples_generate_quickly():
    items = make_dataset(60, num_frames=32, size=56)  # a sanity check on speed, not a timing
    assert len(items) == 60 and items[-1].frames.shape == (32, 56, 56, 3)


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small test split written to mp4 + JSONL once for the module."""
    folder = tmp_path_factory.mktemp("synthetic")
    jsonl = write_dataset(folder, 10, seed=2, split="test", num_frames=FRAMES, size=SIZE, fps=8)
    return folder, jsonl


def test_write_dataset_writes_jsonl_and_videos(written):
    folder, jsonl = written
    assert jsonl == folder / "test.jsonl"
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 10
    assert [r["task"] for r in records] == list(TASKS) * 2
    for record in records:
        assert {"video", "question", "options", "answer", "task"} <= set(record)
        assert record["answer"] in record["options"]
        assert (folder / record["video"]).is_file()


@pytest.mark.parametrize("decoder", ["av", "decord"])
def test_written_videos_decode_and_keep_needle_colors(written, decoder):
    folder, jsonl = written
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        clip = load_video(folder / record["video"], num_frames=FRAMES, decoder=decoder)
        assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3)
        assert clip.duration == pytest.approx(FRAMES / 8)
        if record["task"] not in ("color", "position"):
            continue
        meta = record["meta"]
        start, end = meta["span"]
        cy, cx = (int(c) for c in meta["center"])
        color = meta["color"]
        centre = clip.frames[start:end, cy, cx].astype(int)  # [L, 3]
        assert np.abs(centre - COLORS[color]).max() <= 40
        outside = [t for t in range(FRAMES) if not start <= t < end]
        assert color_mask(clip.frames[outside], color).sum() == 0
