"""Synthetic video question answering: needle-in-a-video clips with exact answers, from a seed.

A miniature of the VideoNIAH needle test. Each clip has a textured background (noise, stripes or
a gradient, static or drifting slowly), a few small grey or brown blobs moving about, and one or
two saturated "needles" that the question is about. Needle colours never appear anywhere else.

Splits: sample i of a dataset draws from ``np.random.default_rng([SPLITS[split], seed, i])``, so
train and test never share a random stream, whatever seeds they are given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from framefusion.video import write_video

TASKS = ("color", "shape", "position", "direction", "order")
SPLITS = {"train": 0, "test": 1}

COLORS = {  # saturated, far from the muted background and blobs, so they survive mp4 compression
    "red": (230, 30, 30),
    "green": (30, 190, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "white": (250, 250, 250),
    "purple": (150, 40, 200),
}
SHAPES = ("square", "circle", "triangle")
HALVES = ("left", "right", "top", "bottom")
DIRECTIONS = ("left", "right", "up", "down")
ANSWERS = {  # every answer a task can have; make_dataset cycles through them
    "color": tuple(COLORS),
    "shape": SHAPES,
    "position": HALVES,
    "direction": DIRECTIONS,
    "order": tuple(COLORS),
}
BLOB_COLORS = ((90, 90, 90), (128, 128, 128), (165, 165, 165), (110, 75, 45), (140, 100, 60))

QUESTIONS = {
    "color": "What color is the square?",
    "shape": "What shape was the colored object?",
    "position_x": "Was the colored shape on the left or the right?",
    "position_y": "Was the colored shape at the top or the bottom?",
    "direction": "Which direction did the {color} {shape} move?",
    "order": "Which color appeared first, {a} or {b}?",
}


@dataclass
class SyntheticSample:
    """One synthetic clip with its question and exact answer."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    question: str
    answer: str  # always one of options
    task: str
    options: list[str]
    meta: dict = field(default_factory=dict)  # spans [start, end) frames, colours, (y, x) px; JSON


# ---------------------------------------------------------------- drawing


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: rows [H, 1] and columns [1, W]."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return coords[:, None], coords[None, :]


def shape_masks(shape: str, centers: np.ndarray, side: float, size: int) -> np.ndarray:
    """Masks [T, H, W] of a shape `side` pixels wide centred at centers [T, 2] (y, x)."""
    rows, cols = _pixel_grid(size)
    dy = rows[None] - centers[:, 0, None, None]  # [T, H, 1]
    dx = cols[None] - centers[:, 1, None, None]  # [T, 1, W]
    half = side / 2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "triangle":  # apex up, base `side` wide at the bottom
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}")


def _paint(frames: np.ndarray, mask: np.ndarray, rgb: Sequence[int]) -> None:
    """Set frames [..., 3] to rgb where mask [...] is true, in place (per channel: fastest)."""
    for channel, value in enumerate(rgb):
        frames[..., channel][mask] = value


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold free motion back into [low, high], as if bouncing off the walls."""
    period = 2 * (high - low)
    offset = np.mod(position - low, period)
    return low + np.where(offset > high - low, period - offset, offset)


def _background(rng: np.random.Generator, num_frames: int, size: int) -> tuple[np.ndarray, dict]:
    """Muted textured frames [T, H, W, 3] uint8, static or drifting, and how they were made."""
    kind = str(rng.choice(["noise", "stripes", "gradient"]))
    drift = rng.uniform(-0.6, 0.6, 2) if rng.random() < 0.5 else np.zeros(2)  # px per frame (y, x)
    steps = np.arange(num_frames, dtype=np.float32)[:, None, None]
    rows, cols = _pixel_grid(size)
    ys = rows[None] + drift[0] * steps  # [T, H, 1]
    xs = cols[None] + drift[1] * steps  # [T, 1, W]
    if kind == "noise":
        cell = int(rng.integers(4, 15))
        grid = rng.random((size // cell + 1, size // cell + 1)).astype(np.float32)
        cells = grid.shape[0]
        flat = (ys // cell).astype(np.int64) % cells * cells + (xs // cell).astype(np.int64) % cells
        pattern = np.take(grid, flat)  # [T, H, W]
    else:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 24) if kind == "stripes" else rng.uniform(2, 4) * size
        phase = rng.uniform(0, 2 * np.pi)
        wave = (np.cos(angle) * xs + np.sin(angle) * ys) * (2 * np.pi / period) + phase
        pattern = 0.5 + 0.5 * np.cos(wave)
    grain = rng.normal(0, 0.08, (size, size)).astype(np.float32)  # static fine texture
    levels = np.clip((pattern + grain) * 255, 0, 255).astype(np.uint8)  # [T, H, W]
    dark = rng.uniform(55, 140) + rng.uniform(-12, 12, 3)  # low saturation: a tinted grey
    light = dark + rng.uniform(20, 45)
    palette = dark + (light - dark) * np.linspace(0, 1, 256)[:, None]  # [256, 3]
    palette = np.clip(palette, 0, 190).astype(np.uint8)
    frames = np.take(palette, np.broadcast_to(levels, (num_frames, size, size)), axis=0)
    meta = {"background": kind, "drift": [round(float(v), 3) for v in drift]}
    return frames, meta


def _add_blobs(rng: np.random.Generator, frames: np.ndarray) -> None:
    """Draw 2-4 small grey or brown ellipses moving and bouncing around, in place."""
    num_frames, size = frames.shape[0], frames.shape[1]
    count = int(rng.integers(2, 5))
    radii = rng.uniform(size / 18, size / 11, (count, 2)).astype(np.float32)  # [K, 2] (ry, rx)
    start = rng.uniform(0, size, (count, 2)).astype(np.float32)  # [K, 2]
    velocity = rng.uniform(-1.5, 1.5, (count, 2)).astype(np.float32)  # [K, 2] px per frame
    steps = np.arange(num_frames, dtype=np.float32)[:, None, None]  # [T, 1, 1]
    centers = _bounce(start + velocity * steps, 0, size)  # [T, K, 2]
    rows, cols = _pixel_grid(size)
    dy = (rows[None, None] - centers[..., 0, None, None]) / radii[:, 0, None, None]  # [T, K, H, 1]
    dx = (cols[None, None] - centers[..., 1, None, None]) / radii[:, 1, None, None]  # [T, K, 1, W]
    masks = dy**2 + dx**2 <= 1  # [T, K, H, W]
    for k in range(count):
        _paint(frames, masks[:, k], BLOB_COLORS[int(rng.integers(len(BLOB_COLORS)))])


def _span(rng: np.random.Generator, first: int, stop: int, num_frames: int) -> tuple[int, int]:
    """A needle's frames [start, end): at least max(3, T/8) long so 8 uniform samples catch it."""
    shortest = max(3, math.ceil(num_frames / 8))
    length = int(rng.integers(shortest, max(shortest, num_frames // 4) + 1))
    start = int(rng.integers(first, stop - length + 1))
    return start, start + length


def _needle_side(rng: np.random.Generator, size: int) -> int:
    """A needle's width: a quarter to a third of the frame."""
    return int(rng.integers(size // 4, size // 3 + 1))


def _place(rng: np.random.Generator, side: int, low: float, high: float) -> float:
    """A centre coordinate keeping a shape `side` wide inside [low, high]."""
    return float(rng.uniform(low + side / 2 + 1, high - side / 2 - 1))


def _draw(frames: np.ndarray, shape: str, color: str, span: tuple[int, int], centers, side) -> None:
    """Draw a needle in place on frames[start:end], at centers [end - start, 2] or one (y, x)."""
    start, end = span
    centers = np.broadcast_to(np.asarray(centers, dtype=np.float32), (end - start, 2))
    masks = shape_masks(shape, centers, side, frames.shape[1])  # [end - start, H, W]
    _paint(frames[start:end], masks, COLORS[color])


# ---------------------------------------------------------------- tasks
# Each task draws its needles on frames [T, H, W, 3] in place for a given answer and returns
# (question, options, meta).


def _still_needle(rng, frames, shape, color, *, ys=None, xs=None, frames_range=None) -> dict:
    """Draw one needle, still for a short span; its centre in ys x xs (default anywhere)."""
    num_frames, size = frames.shape[0], frames.shape[1]
    side = _needle_side(rng, size)
    center = (_place(rng, side, *(ys or (0, size))), _place(rng, side, *(xs or (0, size))))
    span = _span(rng, *(frames_range or (0, num_frames)), num_frames)
    _draw(frames, shape, color, span, center, side)
    return {"span": list(span), "color": color, "shape": shape, "side": side,
            "center": [round(c, 1) for c in center]}


def _random_color(rng, excluding: str | None = None) -> str:
    """A needle colour name, other than `excluding`."""
    return str(rng.choice([c for c in COLORS if c != excluding]))


def _color_task(rng, frames, answer):
    """A square of the answer's colour."""
    return QUESTIONS["color"], list(COLORS), _still_needle(rng, frames, "square", answer)


def _shape_task(rng, frames, answer):
    """A needle of the answer's shape, in any colour."""
    meta = _still_needle(rng, frames, answer, _random_color(rng))
    return QUESTIONS["shape"], list(SHAPES), meta


def _position_task(rng, frames, answer):
    """A needle wholly inside the answer's half of the frame."""
    size = frames.shape[1]
    half = (0, size / 2) if answer in ("left", "top") else (size / 2, size)
    shape, color = str(rng.choice(SHAPES)), _random_color(rng)
    if answer in ("left", "right"):
        meta = _still_needle(rng, frames, shape, color, xs=half)
        return QUESTIONS["position_x"], ["left", "right"], meta
    meta = _still_needle(rng, frames, shape, color, ys=half)
    return QUESTIONS["position_y"], ["top", "bottom"], meta


def _direction_task(rng, frames, answer):
    """A needle moving >= 0.4 of the frame in the answer's direction over >= T/2 frames."""
    num_frames, size = frames.shape[0], frames.shape[1]
    side = int(rng.integers(size // 5, size // 4 + 1))
    shape, color = str(rng.choice(SHAPES)), _random_color(rng)
    near = _place(rng, side, 0, size * 0.4)  # start and end within 40% of opposite edges
    far = _place(rng, side, size * 0.6, size)
    across = _place(rng, side, 0, size)
    begin, finish = (far, near) if answer in ("left", "up") else (near, far)
    length = int(rng.integers(num_frames // 2, num_frames + 1))
    start = int(rng.integers(0, num_frames - length + 1))
    path = np.linspace(begin, finish, length)  # [L] the moving coordinate
    fixed = np.full(length, across)
    centers = np.stack([fixed, path] if answer in ("left", "right") else [path, fixed], axis=1)
    _draw(frames, shape, color, (start, start + length), centers, side)  # centers [L, 2]
    meta = {"span": [start, start + length], "color": color, "shape": shape, "side": side,
            "start": [round(float(c), 1) for c in centers[0]],
            "end": [round(float(c), 1) for c in centers[-1]]}
    return QUESTIONS["direction"].format(color=color, shape=shape), list(DIRECTIONS), meta


def _order_task(rng, frames, answer):
    """The answer's colour in the first half of the clip, another colour in the second half."""
    num_frames = frames.shape[0]
    later = _random_color(rng, excluding=answer)
    first = _still_needle(rng, frames, str(rng.choice(SHAPES)), answer,
                          frames_range=(0, num_frames // 2))
    second = _still_needle(rng, frames, str(rng.choice(SHAPES)), later,
                           frames_range=(num_frames // 2, num_frames))
    options = [answer, later] if rng.random() < 0.5 else [later, answer]
    meta = {"spans": [first["span"], second["span"]], "colors": [answer, later],
            "shapes": [first["shape"], second["shape"]]}
    return QUESTIONS["order"].format(a=options[0], b=options[1]), options, meta


_TASK_MAKERS = {
    "color": _color_task,
    "shape": _shape_task,
    "position": _position_task,
    "direction": _direction_task,
    "order": _order_task,
}


# ---------------------------------------------------------------- public API


def make_sample(
    task: str,
    seed: int | Sequence[int] | np.random.Generator = 0,
    *,
    num_frames: int = 32,
    size: int = 112,
    answer: str | None = None,
) -> SyntheticSample:
    """One clip of `task` with its question and exact answer (random unless `answer` is given)."""
    if task not in _TASK_MAKERS:
        raise ValueError(f"unknown task {task!r}; choose from: {', '.join(TASKS)}")
    if num_frames < 8:
        raise ValueError(f"num_frames must be at least 8, got {num_frames}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be even and at least 32, got {size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if answer is None:
        answer = str(rng.choice(ANSWERS[task]))
    elif answer not in ANSWERS[task]:
        choices = ", ".join(ANSWERS[task])
        raise ValueError(f"{answer!r} cannot answer {task!r}; choose from: {choices}")
    frames, meta = _background(rng, num_frames, size)  # [T, H, W, 3]
    _add_blobs(rng, frames)
    question, options, task_meta = _TASK_MAKERS[task](rng, frames, answer)
    meta.update(task_meta)
    if not isinstance(seed, np.random.Generator):
        meta["seed"] = int(seed) if np.isscalar(seed) else [int(s) for s in seed]
    return SyntheticSample(frames, question, answer, task, options, meta)


def iter_dataset(
    n: int,
    seed: int = 0,
    *,
    split: str = "train",
    tasks: Sequence[str] = TASKS,
    num_frames: int = 32,
    size: int = 112,
) -> Iterator[SyntheticSample]:
    """Yield n samples, cycling over tasks and, within each task, over its answers."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    for task in tasks:
        if task not in _TASK_MAKERS:
            raise ValueError(f"unknown task {task!r}; choose from: {', '.join(TASKS)}")
    for i in range(n):
        task = tasks[i % len(tasks)]
        answers = ANSWERS[task]
        answer = answers[(i // len(tasks)) % len(answers)]
        yield make_sample(
            task, [SPLITS[split], seed, i], num_frames=num_frames, size=size, answer=answer
        )


def make_dataset(
    n: int,
    seed: int = 0,
    *,
    split: str = "train",
    tasks: Sequence[str] = TASKS,
    num_frames: int = 32,
    size: int = 112,
) -> list[SyntheticSample]:
    """n samples balanced over tasks and answers; train and test splits never share a seed."""
    return list(iter_dataset(n, seed, split=split, tasks=tasks, num_frames=num_frames, size=size))


def write_dataset(
    folder: str | Path,
    n: int,
    seed: int = 0,
    *,
    split: str = "train",
    tasks: Sequence[str] = TASKS,
    num_frames: int = 32,
    size: int = 112,
    fps: float = 8.0,
) -> Path:
    """Write n clips as mp4 under folder/videos and one JSON line each to folder/<split>.jsonl."""
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    jsonl = folder / f"{split}.jsonl"
    samples = iter_dataset(n, seed, split=split, tasks=tasks, num_frames=num_frames, size=size)
    with jsonl.open("w") as out:
        for i, sample in enumerate(samples):
            video = Path("videos") / f"{split}-{seed}-{i:05d}.mp4"
            write_video(folder / video, sample.frames, fps)
            record = {
                "video": video.as_posix(),  # relative to the JSONL's folder
                "question": sample.question,
                "options": sample.options,
                "answer": sample.answer,
                "task": sample.task,
                "meta": sample.meta,
            }
            out.write(json.dumps(record) + "\n")
    return jsonl
