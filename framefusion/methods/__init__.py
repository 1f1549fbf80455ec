"""Token-reduction methods behind one name each, applied at a matched budget.

A method changes the model in place (`apply`) and may also change which frames are sampled
(`select_frames`, e.g. the dense model on fewer frames). `dense` removes every reduction.

Budget and kept_ratio mean the same for every method: kept_ratio = (1 / L) * sum over the L decoder layers of
(video tokens in that layer's KV cache when decoding starts) / N_v, N_v = the prompt's video tokens (for
`uniform`, those the full clip would have had). Each method is set up so that kept_ratio lands on the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from framefusion.methods.dycoke import apply_dycoke
from framefusion.methods.evs import apply_evs
from framefusion.methods.fastv import apply_fastv
from framefusion.methods.fastvid import apply_fastvid
from framefusion.methods.flashvid import apply_flashvid
from framefusion.methods.framefusion import apply_framefusion
from framefusion.methods.holitom import apply_holitom
from framefusion.methods.install import install_dense
from framefusion.methods.streamingllm import apply_streamingllm
from framefusion.methods.uniform import apply_uniform, select_uniform_frames
from framefusion.methods.vidcom2 import apply_vidcom2
from framefusion.methods.visionzip import apply_visionzip
from framefusion.video import VideoClip


@dataclass(frozen=True)
class Method:
    """One comparable method: how to install it on a model, the parameters it takes, how it picks frames."""

    name: str
    summary: str
    apply: Callable[..., nn.Module]  # apply(model, budget, **params) -> model
    select_frames: Callable[..., VideoClip] | None = None  # (clip, budget, model=model) -> clip
    params: tuple[str, ...] = ()  # keyword parameters `apply` takes besides the budget


def _dense(model: nn.Module, budget: float, **params: Any) -> nn.Module:
    return install_dense(model)


def _framefusion(model: nn.Module, budget: float, **params: Any) -> nn.Module:
    return apply_framefusion(model, cost=budget, **params)


METHODS: dict[str, Method] = {
    "dense": Method("dense", "the unreduced model, with the published model's positions", _dense),
    "framefusion": Method("framefusion", "merge similar, then prune unimportant video tokens (FrameFusion)",
                          _framefusion, params=("similarity_lower_bound", "ratio_lower_bound", "importance_queries")),
    "fastv": Method("fastv", "prune video tokens by last-query attention after layer K = 2 (FastV)", apply_fastv,
                    params=("layer",)),
    "streamingllm": Method("streamingllm", "attention sink of 8 tokens plus a recent window (StreamingLLM)",
                           apply_streamingllm, params=("sink",)),
    "vidcom2": Method("vidcom2", "keep each frame's outlier tokens, frame budgets by distinctiveness (VidCom2)",
                      apply_vidcom2, params=("budget_rule",)),
    "evs": Method("evs", "keep the first frame, then the tokens that changed most since the previous frame (EVS)",
                  apply_evs, params=("budget_rule",)),
    "uniform": Method("uniform", "the dense model on fewer, uniformly sampled frames (Original*)", apply_uniform,
                      select_frames=select_uniform_frames),
    "visionzip": Method("visionzip", "per frame, dominant tokens by vision-encoder attention plus contextual "
                                     "merges (VisionZip)", apply_visionzip, params=("saliency", "budget_rule")),
    "fastvid": Method("fastvid", "segments of similar frames; per frame salient tokens, density-peak context "
                                 "tokens on anchor frames that absorb the rest (FastVID)", apply_fastvid,
                      params=("saliency", "min_segments", "cut_threshold", "context_ratio", "anchor_interval",
                              "context_weight", "budget_rule")),
    "holitom": Method("holitom", "holistic temporal merging of static patches and spatial merging before the LLM, "
                                 "attention-ranked merging inside it (HoliTom)", apply_holitom,
                      params=("saliency", "inner", "tau", "beta", "context_share", "knn", "max_window", "inner_ratio",
                              "inner_layer", "budget_rule")),
    "dycoke": Method("dycoke", "temporal pruning of 4-frame windows, then KV pruning by attention (DyCoke)",
                     apply_dycoke, params=("ttm_rate", "kv_layer")),
    "flashvid": Method("flashvid", "segments of similar frames; per frame diverse salient tokens, the rest merged in "
                                   "trees across frames and clustered; then one attention-ranked prune inside the LLM "
                                   "(FlashVID)", apply_flashvid,
                       params=("saliency", "budget_rule", "selection", "alpha", "temporal_threshold",
                               "segment_threshold", "min_segments", "expansion", "pruning_layer",
                               "llm_retention_ratio", "tree_weights")),
}


def method_names() -> list[str]:
    """Names accepted by `apply_method` and the CLI's --method."""
    return list(METHODS)


def method_parameter_names() -> list[str]:
    """Every parameter some method takes besides the budget, sorted."""
    return sorted({param for method in METHODS.values() for param in method.params})


def get_method(name: str) -> Method:
    """The method registered under `name`, or a ValueError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def apply_method(model: nn.Module, name: str, budget: float = 0.3, **params: Any) -> nn.Module:
    """Install method `name` on the model at the given budget (replacing any reduction already there).

    Parameters of other methods (e.g. FrameFusion's similarity_lower_bound given to fastv) are dropped, so one
    set of options can drive every method; a parameter no method takes is an error.
    """
    method = get_method(name)
    unknown = sorted(set(params) - set(method_parameter_names()))
    if unknown:
        raise TypeError(f"unknown method parameter(s) {', '.join(unknown)}; known: {', '.join(method_parameter_names())}")
    return method.apply(model, budget, **{k: v for k, v in params.items() if k in method.params})


def select_frames(name: str, clip: VideoClip, budget: float, model: nn.Module) -> VideoClip:
    """The frames method `name` feeds `model` (most methods use all sampled frames; `uniform` picks fewer, by the
    model's temporal patch size, and remembers the pick on the model it is installed on)."""
    method = get_method(name)
    return method.select_frames(clip, budget, model=model) if method.select_frames else clip
