"""Run several methods on the same frames and question and measure how closely each agrees with dense."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from framefusion.methods import get_method
from framefusion.pipeline.answer import DENSE, AskResult, VideoInput, ask, load_videos
from framefusion.pipeline.evaluation import DatasetItem, ItemResult, MethodScore, evaluate_dataset, normalize
from framefusion.pipeline.loading import LoadedModel
from framefusion.video import Sampling

DEFAULT_METHODS = (DENSE, "framefusion")


@dataclass
class Agreement:
    """How one method's output compares with the dense model's on the same prompt."""

    first_token_match: bool  # same top-1 first token as dense
    kl_divergence: float  # KL(dense || method) of the first-token distributions, in nats
    exact_match: bool  # same answer as dense after normalisation (case, punctuation, spaces)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class CompareResult:
    """One ask result per method, and each method's agreement with dense."""

    results: list[AskResult]
    agreement: dict[str, Agreement]  # method -> agreement with dense
    video_s: float = 0.0  # decoding and sampling the video once, shared by every method

    def to_json(self) -> dict[str, Any]:
        """The JSON object `framefusion compare --json` prints."""
        return {"results": [result.to_json() for result in self.results],
                "agreement": {method: a.to_dict() for method, a in self.agreement.items()},
                "video_s": self.video_s}


def first_token_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(reference || other) between the softmax distributions of two [vocab] logit vectors, in nats."""
    log_p = torch.log_softmax(reference_logits.double(), dim=-1)
    log_q = torch.log_softmax(logits.double(), dim=-1)
    return max(float(torch.sum(log_p.exp() * (log_p - log_q))), 0.0)


def agreement(reference: AskResult, other: AskResult) -> Agreement:
    """How `other` agrees with `reference`: first-token top-1, first-token KL, normalised exact answer."""
    ref_logits, logits = reference.first_token_logits, other.first_token_logits
    return Agreement(
        first_token_match=bool(int(ref_logits.argmax()) == int(logits.argmax())),
        kl_divergence=first_token_kl(ref_logits, logits),
        exact_match=normalize(reference.answer) == normalize(other.answer),
    )


def with_reference(methods: Sequence[str]) -> list[str]:
    """The methods in order, each once, with dense first if it was not asked for."""
    ordered = list(dict.fromkeys(methods))
    for name in ordered:
        get_method(name)  # fail fast on an unknown name, before any model work
    return ordered if DENSE in ordered else [DENSE, *ordered]


def compare(loaded: LoadedModel, videos: VideoInput | Sequence[VideoInput], question: str,
            methods: Sequence[str] = DEFAULT_METHODS, *, budget: float = 0.3, params: Mapping[str, Any] | None = None,
            sampling: Sampling | None = None, max_new_tokens: int = 64, warmup: bool = True,
            on_result: Callable[[AskResult], None] | None = None,
            on_video_progress: Callable[[int, int], None] | None = None) -> CompareResult:
    """Ask the same question with each method (dense added as the reference) and score agreement with dense.

    The video is decoded once (files by `sampling`); params: method parameters by name, each method takes the
    ones it knows.
    """
    methods = with_reference(methods)
    clips, video_s = load_videos(videos, sampling, on_video_progress)
    settings = dict(budget=budget, params=params)
    if warmup:  # one untimed token first, so the first method does not pay for lazy initialisation
        ask(loaded, clips, question, method=methods[0], max_new_tokens=1, **settings)
    results = []
    for method in methods:
        result = ask(loaded, clips, question, method=method, max_new_tokens=max_new_tokens, **settings)
        results.append(result)
        if on_result is not None:
            on_result(result)
    reference = results[methods.index(DENSE)]
    return CompareResult(results, {r.method: agreement(reference, r) for r in results}, video_s)


def score_methods(loaded: LoadedModel, items: Sequence[DatasetItem], methods: Sequence[str], *,
                  budget: float = 0.3, params: Mapping[str, Any] | None = None, num_frames: int = 16,
                  max_new_tokens: int = 8, decoder: str = "av",
                  on_item: Callable[[str, ItemResult], None] | None = None) -> list[MethodScore]:
    """Accuracy of each method on a dataset (framefusion.pipeline.evaluation), in the order given."""
    scores = []
    for method in dict.fromkeys(methods):
        get_method(method)
        report = (lambda result, name=method: on_item(name, result)) if on_item is not None else None
        scores.append(evaluate_dataset(loaded, items, method=method, budget=budget,
                                       num_frames=num_frames, max_new_tokens=max_new_tokens, decoder=decoder,
                                       params=params, on_item=report))
    return scores
