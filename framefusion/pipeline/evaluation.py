"""Accuracy of a video LLM on a multiple-choice video QA set (JSONL + mp4), dense or under a token-reduction method."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framefusion.api import reduced
from framefusion.pipeline.answer import greedy_generate, model_inputs
from framefusion.pipeline.loading import LoadedModel
from framefusion.video import load_video


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
    similarity_threshold: float | None = None  # FrameFusion's S_threshold that ran (None: other methods)
    threshold_source: str | None = None  # where it came from (given, calibrated, family default)


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
    similarity_threshold: float | None = None  # FrameFusion's S_threshold that ran (None: other methods)
    threshold_source: str | None = None  # where it came from (given, calibrated, family default)

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


def answer_question(loaded: LoadedModel, clip, question: str, max_new_tokens: int = 8) -> str:
    """Greedy answer of the model, as it is (dense or with a method installed), to one question about one clip."""
    generation = greedy_generate(loaded, model_inputs(loaded, [clip], question), max_new_tokens)
    return loaded.tokenizer.decode(generation.new_tokens, skip_special_tokens=True).strip()


def evaluate_dataset(
    loaded: LoadedModel,
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

    kept_ratio is each prompt's achieved budget from the run's statistics (methods that sample fewer frames report
    it against the full clip), 1.0 where the method leaves no statistics.
    """
    results = []
    with reduced(loaded.model, method, budget, **(params or {})) as run:
        for item in items:
            clip = run.select_frames(load_video(item.video, num_frames=num_frames, decoder=decoder))
            before = run.stats
            prediction = answer_question(loaded, clip, item.question, max_new_tokens)
            stats = run.stats
            own = stats if stats is not None and stats is not before else None  # the method's own count
            result = ItemResult(item, prediction, score_answer(prediction, item.answer, item.options),
                                own.kept_ratio if own is not None else 1.0,
                                own.importance_queries if own is not None else None,
                                own.prefill_ratio if own is not None else 1.0,
                                own.similarity_threshold if own is not None else None,
                                own.threshold_source if own is not None else None)
            results.append(result)
            if on_item is not None:
                on_item(result)
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
        similarity_threshold=next((r.similarity_threshold for r in results if r.similarity_threshold is not None),
                                  None),
        threshold_source=next((r.threshold_source for r in results if r.threshold_source is not None), None),
    )
