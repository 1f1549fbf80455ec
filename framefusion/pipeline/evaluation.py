"""Accuracy of a video LLM on a multiple-choice video QA set (JSONL + mp4), dense or under a token-reduction method."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framefusion.api import last_stats, remove_framefusion
from framefusion.methods import apply_method, select_frames
from framefusion.video import load_video
from framefusion.video.prompting import prepare_inputs


@dataclass
class DatasetItem:
    """One question about one video; `answer` is one of `options` when options are given."""

    video: Path
    question: str
    options: list[str]
    answer: str
    task: str | None = None


@dataclass
class ItemResult:
    """What the model said about one item, and whether it was right."""

    item: DatasetItem
    prediction: str
    correct: bool
    kept_ratio: float  # achieved budget on this prompt (1.0 when nothing was reduced)
    importance_queries: int | None = None  # query rows the prune importance averaged over (None: not by attention)
    prefill_ratio: float = 1.0  # vision tokens the prefill ran per layer, over N_v (see ReductionStats.prefill_ratio)


@dataclass
class MethodScore:
    """Accuracy of one method at one budget over a dataset."""

    method: str
    budget: float
    accuracy: float
    correct: int
    total: int
    kept_ratio: float  # mean achieved budget over the items
    per_task: dict[str, float] = field(default_factory=dict)  # task -> accuracy
    importance_queries: int | None = None  # query rows the prune importance averaged over (None: not by attention)
    prefill_ratio: float = 1.0  # mean over the items of the vision tokens the prefill ran per layer, over N_v

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


# ---------------------------------------------------------------- dataset files


def load_dataset(jsonl: str | Path) -> list[DatasetItem]:
    """Read one item per JSON line: video (relative to the file's folder), question, answer, options, task."""
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise ValueError(f"dataset file not found: {jsonl}")
    items = []
    for number, line in enumerate(jsonl.read_text().splitlines(), start=1):
        if line.strip():
            items.append(_parse_item(line, jsonl.parent, f"{jsonl}:{number}"))
    if not items:
        raise ValueError(f"no items in {jsonl}")
    return items


def _parse_item(line: str, folder: Path, where: str) -> DatasetItem:
    """One DatasetItem from a JSON line, or a ValueError naming the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("video", "question", "answer") if key not in record]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    options = record.get("options") or []
    if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        raise ValueError(f"{where}: options must be a list of strings")
    answer = str(record["answer"])
    if options and answer not in options:
        raise ValueError(f"{where}: answer {answer!r} is not one of the options {options}")
    video = Path(record["video"])
    task = record.get("task")
    return DatasetItem(
        video=video if video.is_absolute() else folder / video,
        question=str(record["question"]),
        options=options,
        answer=answer,
        task=None if task is None else str(task),
    )


# ---------------------------------------------------------------- scoring


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def named_options(prediction: str, options: Sequence[str]) -> list[str]:
    """The options the prediction names as whole words (an option inside a longer named one does not count)."""
    text = f" {normalize(prediction)} "
    found = [option for option in options if normalize(option) and f" {normalize(option)} " in text]
    return [o for o in found if not any(o != other and f" {normalize(o)} " in f" {normalize(other)} " for other in found)]


def score_answer(prediction: str, answer: str, options: Sequence[str]) -> bool:
    """True if the prediction is the answer: normalised exact match, or with options the single option it names."""
    if not options:
        return normalize(prediction) == normalize(answer)
    return named_options(prediction, options) == [answer]


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def answer_question(model: nn.Module, processor: Any, clip, question: str, max_new_tokens: int = 8) -> str:
    """Greedy answer of the model to one question about one sampled clip."""
    inputs = prepare_inputs(processor, [clip], question).to(model.device)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def evaluate_dataset(
    model: nn.Module,
    processor: Any,
    items: Sequence[DatasetItem],
    *,
    method: str,
    budget: float,
    num_frames: int,
    max_new_tokens: int = 8,
    decoder: str = "av",
    params: Mapping[str, Any] | None = None,
    on_item: Callable[[ItemResult], None] | None = None,
) -> MethodScore:
    """Answer every item with `method` at `budget` applied, score it, and leave the model dense afterwards.

    params: method parameters by name (each method takes the ones it knows; default: every method's defaults).

    kept_ratio is each prompt's achieved budget from `last_stats` (methods that sample fewer frames report it
    against the full clip), 1.0 where the method leaves no statistics.
    """
    results = []
    try:
        apply_method(model, method, budget, **(params or {}))
        for item in items:
            clip = load_video(item.video, num_frames=num_frames, decoder=decoder)
            chosen = select_frames(method, clip, budget, model=model)
            before = last_stats(model)
            prediction = answer_question(model, processor, chosen, item.question, max_new_tokens)
            stats = last_stats(model)
            own = stats if stats is not None and stats is not before else None  # the method's own count
            result = ItemResult(item, prediction, score_answer(prediction, item.answer, item.options),
                                own.kept_ratio if own is not None else 1.0,
                                own.importance_queries if own is not None else None,
                                own.prefill_ratio if own is not None else 1.0)
            results.append(result)
            if on_item is not None:
                on_item(result)
    finally:
        remove_framefusion(model)
    return summarize(method, budget, results)


def summarize(method: str, budget: float, results: Sequence[ItemResult]) -> MethodScore:
    """Overall and per-task accuracy and the mean kept ratio of a list of item results."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        if result.item.task is not None:
            by_task[result.item.task].append(result.correct)
    correct = sum(result.correct for result in results)
    total = len(results)
    return MethodScore(
        method=method,
        budget=budget,
        accuracy=correct / total if total else 0.0,
        correct=correct,
        total=total,
        kept_ratio=sum(r.kept_ratio for r in results) / total if total else 1.0,
        per_task={task: sum(marks) / len(marks) for task, marks in sorted(by_task.items())},
        importance_queries=next((r.importance_queries for r in results if r.importance_queries is not None), None),
        prefill_ratio=sum(r.prefill_ratio for r in results) / total if total else 1.0,
    )
