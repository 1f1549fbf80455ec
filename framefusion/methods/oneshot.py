"""The Reducer shared by the comparison methods: one or a few steps, each at a fixed reduction point, that keep
a subset of the alive video tokens and may give the kept ones merged features.

Point 0 acts on layer 0's input embeddings, i.e. the projected video features (VidCom2, EVS, VisionZip, ...):
removed tokens leave the LLM input entirely. A point l + 1 >= 1 acts after layer l's attention and, with
`needs_attention`, gets that layer's last query rows and keys (FastV, HoliTom's inner merge). Kept tokens keep
their dense positions (the engine slices positions, never renumbers); a merged token takes the position of the
token it merged into. A method may also evict KV rows at the end of prefill (`kv_keep`, per layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.adapters import adapter_for
from framefusion.core.contract import QueryKeys, Reducer
from framefusion.core.layout import TokenLayout
from framefusion.core.patches import PatchStack
from framefusion.core.stats import KEPT, MERGED, PRUNED, ReductionStats, StepRecord
from framefusion.methods.common import check_budget, layout_stats, per_video
from framefusion.methods.install import install_method
from framefusion.methods.memo import MemoEntry, SelectionMemo, memo_of


@dataclass
class Selection:
    """What a step keeps of n video tokens, and what the kept ones hold afterwards."""

    keep: torch.Tensor  # [n] bool
    features: torch.Tensor | None = None  # [n, D]: new states of the kept tokens (merges); None: unchanged
    merged_into: torch.Tensor | None = None  # [n] long: the kept token (0..n-1) each removed one joined, -1: pruned


# choose(layout, vision_hidden [n, D], attention or None) -> keep [n] bool, or a Selection. `layout` describes the
# n alive video tokens; its `positions` are their rows in the current hidden states (sequence positions while
# nothing has been removed), so an attention row over the alive tokens is indexed by them.
Chooser = Callable[[TokenLayout, torch.Tensor, "QueryKeys | None"], "torch.Tensor | Selection"]


@dataclass(frozen=True)
class Stage:
    """One step of a method: at reduction `point`, `choose` the tokens to keep."""

    point: int | None  # None: never runs (statistics only)
    choose: Chooser | None
    needs_attention: bool = False


class StagedReduction(Reducer):
    """Runs a method's stages at their points; removed tokens keep the step that removed them in the statistics."""

    def __init__(self, layout: TokenLayout, num_layers: int, device: torch.device, method: str,
                 stages: Sequence[Stage]):
        n_v = layout.num_vision_tokens
        self.layout = layout
        self.num_layers = num_layers
        self.method = method
        self.stages = [s for s in stages if s.point is not None and s.choose is not None]
        self.alive = torch.arange(layout.seq_len, device=device)  # [n_alive] sequence positions
        self.version = 0
        self.query_rows = 1  # attention-based choices rank by the last prompt row (FastV, HoliTom)
        self.finished = not self.stages or n_v == 0
        self.removed_at = torch.full((n_v,), -1, dtype=torch.long)
        self.removed_by = torch.full((n_v,), KEPT, dtype=torch.long)
        self.merged_into = torch.full((n_v,), -1, dtype=torch.long)
        self.steps: list[StepRecord] = []
        self.kv_keep: list[torch.Tensor | None] | None = None  # per layer: KV rows kept after prefill (None: all)

    def _stage_at(self, point: int) -> Stage | None:
        return next((s for s in self.stages if s.point == point), None)

    def prunes_at(self, point: int) -> bool:
        """True at a point whose stage ranks by the layer's attention (its q/k must be recorded)."""
        stage = self._stage_at(point)
        return not self.finished and stage is not None and stage.needs_attention

    def step(self, point: int, hidden: torch.Tensor, attention: QueryKeys | None = None) -> torch.Tensor:
        """Run the stage due at `point` on hidden [1, n_alive, D]; elsewhere a no-op."""
        stage = None if self.finished else self._stage_at(point)
        if stage is None:
            return hidden
        if stage.needs_attention and attention is None:
            raise RuntimeError(f"{self.method}: the step at point {point} needs the layer's attention")
        device = hidden.device
        alive_ids = torch.nonzero(self.removed_at < 0).flatten()  # [n] vision ids, layout order
        rows = torch.searchsorted(self.alive.to(device), self.layout.positions[alive_ids].to(device))  # [n]
        sub = self.layout.subset(alive_ids, rows.cpu())
        chosen = stage.choose(sub, hidden[0, rows], attention)
        selection = chosen if isinstance(chosen, Selection) else Selection(chosen)
        keep = selection.keep.to(device)
        if selection.features is not None:
            hidden = hidden.clone()
            hidden[0, rows[keep]] = selection.features.to(device, hidden.dtype)[keep]
        removed = (~keep).cpu()
        gone = alive_ids[removed]
        self.removed_at[gone] = point
        if selection.merged_into is not None:
            into = selection.merged_into.cpu()[removed]
            self.removed_by[gone] = torch.where(into >= 0, MERGED, PRUNED)
            self.merged_into[gone] = torch.where(into >= 0, alive_ids[into.clamp(min=0)], -1)
        else:
            self.removed_by[gone] = PRUNED
        n = alive_ids.numel()
        self.steps.append(StepRecord(point, "merge" if selection.merged_into is not None else "prune", n,
                                     int(removed.sum()), float(removed.sum()) / max(n, 1)))
        self.finished = all(s.point <= point for s in self.stages)
        if not removed.any():
            return hidden
        keep_rows = torch.ones(hidden.shape[1], dtype=torch.bool, device=device)
        keep_rows[rows[~keep]] = False
        self.alive = self.alive.to(device)[keep_rows]
        self.version += 1
        return hidden[:, keep_rows]

    def stats(self) -> ReductionStats:
        """What this prefill removed or merged, in the statistics every method reports."""
        stats = layout_stats(self.layout, self.num_layers, self.method, self.removed_at, self.removed_by, self.steps,
                             importance_queries=self.query_rows if any(s.needs_attention for s in self.stages)
                             else None)
        stats.merged_into = self.merged_into.clone()
        return stats


class OneShotReduction(StagedReduction):
    """A method of one step: removes the video tokens `choose` rejects at reduction `point`, then finishes."""

    def __init__(self, layout: TokenLayout, num_layers: int, device: torch.device, method: str,
                 point: int | None, choose: Chooser | None = None, needs_attention: bool = False):
        super().__init__(layout, num_layers, device, method, [Stage(point, choose, needs_attention)])
        self.point = point


# video_fn(features [frames, P, D], budget[, saliency [frames, P]]) -> keep [frames * P] bool or a Selection, for
# one video (saliency: the attention each token receives in the vision encoder, for methods that rank by it)
VideoReducer = Callable[..., "torch.Tensor | Selection"]


def keep_per_video(layout: TokenLayout, vision_hidden: torch.Tensor, budget: float, video_fn: VideoReducer,
                   saliency: torch.Tensor | None = None, memo: SelectionMemo | None = None,
                   method: str = "") -> Selection:
    """A Selection over a prompt's video tokens (vision_hidden [N_v, D], saliency [N_v] or None), each video
    reduced on its own; with a session's `memo`, a video whose features and saliency were seen before gets the
    selection made then (methods/memo.py)."""
    n_v = layout.num_vision_tokens
    keep = torch.ones(n_v, dtype=torch.bool, device=vision_hidden.device)
    features, merged_into = None, torch.full((n_v,), -1, dtype=torch.long, device=vision_hidden.device)
    merges = False
    for grid, (start, end) in zip(layout.grids, per_video(layout)):
        if end - start != grid.frames * grid.tokens_per_frame:
            continue  # a video cut short (cannot happen with a text-terminated prompt): leave it dense
        shape = (grid.frames, grid.tokens_per_frame)
        extra = () if saliency is None else (saliency[start:end].reshape(shape).to(vision_hidden.device),)
        video = vision_hidden[start:end].reshape(*shape, -1)  # [T, P, D]
        selection = _memoized(memo, method, budget, video, extra, video_fn)
        keep[start:end] = selection.keep
        if selection.features is not None:
            features = vision_hidden.clone() if features is None else features
            features[start:end] = selection.features.to(features.dtype)
        if selection.merged_into is not None:
            merges = True
            inside = selection.merged_into >= 0
            merged_into[start:end] = torch.where(inside, selection.merged_into + start, selection.merged_into)
    return Selection(keep, features, merged_into if merges else None)


def _memoized(memo: SelectionMemo | None, method: str, budget: float, features: torch.Tensor, extra: tuple,
              video_fn: VideoReducer) -> Selection:
    """video_fn's Selection for one video [T, P, D], from the memo when these features were seen before."""
    def select() -> Selection:
        result = video_fn(features, budget, *extra)
        return result if isinstance(result, Selection) else Selection(result)

    if memo is None:
        return select()
    key = memo.key(method, budget, features, extra[0] if extra else None)
    entry = memo.get(key)
    if entry is None:
        selection = select()
        kept = None if selection.features is None else selection.features[selection.keep].clone()
        memo.put(key, MemoEntry(selection.keep.clone(), kept, selection.merged_into))
        return selection
    flat = None
    if entry.kept_features is not None:
        flat = features.reshape(-1, features.shape[-1]).clone()  # [T * P, D]; only the kept rows are read
        flat[entry.keep.to(flat.device)] = entry.kept_features.to(flat.device, flat.dtype)
    return Selection(entry.keep.to(features.device), flat, entry.merged_into)


def install_pre_llm(model: nn.Module, name: str, label: str, budget: float, video_fn: VideoReducer,
                    saliency: str | None = None) -> nn.Module:
    """Install a method that reduces each video's tokens with `video_fn` before the LLM (before layer 0).

    saliency="attention": video_fn also gets the vision encoder's attention per token (a probe on the family's
    vision tower; ValueError where the family has none); "norm": the L2 norm of the projected token instead
    (the proxy of VidCom2's Qwen adaptation); None: video_fn takes no saliency.
    """
    check_budget(budget)
    check_saliency(saliency, allow_none=True)

    def build(patches: PatchStack):
        score = saliency_source(model, name, saliency, patches)

        def make_reducer(layout, stack, device):
            return OneShotReduction(layout, stack.num_layers, device, name, 0,
                                    lambda lay, hidden, _attention: keep_per_video(
                                        lay, hidden, budget, video_fn, score(hidden) if score else None,
                                        memo_of(model), name))

        return make_reducer

    return install_method(model, f"{label}(budget={budget}" + (f", saliency={saliency})" if saliency else ")"), build)


SALIENCY = ("attention", "norm")


class _Saliency:
    """Per-video-token saliency for a prefill: the vision probe's attention, or the feature norm."""

    def __init__(self, probe=None):
        self.probe = probe

    def __call__(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        if self.probe is None:
            return vision_hidden.float().norm(dim=-1)
        taken = self.probe.take()
        if taken.numel() != vision_hidden.shape[0]:
            raise RuntimeError(f"the vision encoder scored {taken.numel()} video tokens but the prompt has "
                               f"{vision_hidden.shape[0]}")
        return taken


def check_saliency(saliency: str | None, allow_none: bool = False) -> None:
    """ValueError unless `saliency` names a source (or is None where allowed)."""
    if not (saliency is None and allow_none) and saliency not in SALIENCY:
        raise ValueError(f"saliency={saliency!r}: choose one of {', '.join(SALIENCY)}")


def saliency_source(model: nn.Module, method: str, saliency: str | None, patches: PatchStack) -> _Saliency | None:
    """The saliency a method ranks by, its probe's hooks on `patches`; a family without vision-encoder attention
    is a ValueError for "attention"."""
    if saliency is None:
        return None
    check_saliency(saliency)
    if saliency == "norm":
        return _Saliency()
    adapter = adapter_for(model)
    probe = adapter.vision_probe(model, patches)
    if probe is None:
        raise ValueError(f"{method} ranks video tokens by the vision encoder's attention, which framefusion reads "
                         "for the Qwen-VL, SigLIP (LLaVA-OneVision, LLaVA-Video, NVILA) and InternViT (InternVL2.5) "
                         f"towers only, not {adapter.name}'s; pass saliency='norm' (--saliency norm) to rank by the "
                         "feature norm instead, as VidCom2's Qwen adaptation does")
    return _Saliency(probe)
