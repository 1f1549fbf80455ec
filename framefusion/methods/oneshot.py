"""The Reducer shared by the baselines that remove one set of video tokens at one reduction point."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from framefusion.api import install_reducer
from framefusion.layout import TokenLayout
from framefusion.methods.common import check_budget, layout_stats, per_video
from framefusion.reduction import QueryKeys
from framefusion.stats import KEPT, PRUNED, ReductionStats, StepRecord

# choose(layout, vision_hidden [N_v, D], attention or None) -> keep [N_v] bool
Chooser = Callable[[TokenLayout, torch.Tensor, "QueryKeys | None"], torch.Tensor]


class OneShotReduction:
    """Removes the video tokens `choose` rejects at reduction `point`, then finishes.

    Point 0 acts on layer 0's input embeddings, i.e. the projected video features (VidCom2, EVS): removed
    tokens leave the LLM input entirely. A point l + 1 >= 1 acts after layer l's attention and, with
    `needs_attention`, gets that layer's last-query row and keys (FastV). `point=None` never removes anything
    (statistics only). Kept tokens keep their dense positions (the engine slices positions, never renumbers).
    """

    def __init__(self, layout: TokenLayout, num_layers: int, device: torch.device, method: str,
                 point: int | None, choose: Chooser | None = None, needs_attention: bool = False):
        n_v = layout.num_vision_tokens
        self.layout = layout
        self.num_layers = num_layers
        self.method = method
        self.point = point
        self.choose = choose
        self.needs_attention = needs_attention
        self.query_rows = 1  # attention-based choices (FastV) rank by the last prompt row, as the FastV paper
        self.alive = torch.arange(layout.seq_len, device=device)  # [n_alive] sequence positions
        self.version = 0
        self.finished = point is None or choose is None or n_v == 0
        self.removed_at = torch.full((n_v,), -1, dtype=torch.long)
        self.removed_by = torch.full((n_v,), KEPT, dtype=torch.long)
        self.steps: list[StepRecord] = []

    def prunes_at(self, point: int) -> bool:
        """True at the one point where the layer's q/k must be recorded for `choose`."""
        return self.needs_attention and not self.finished and point == self.point

    def step(self, point: int, hidden: torch.Tensor, attention: QueryKeys | None = None) -> torch.Tensor:
        """At `self.point`, drop the rejected video tokens from hidden [1, N, D]; elsewhere a no-op."""
        if self.finished or point != self.point:
            return hidden
        if self.needs_attention and attention is None:
            raise RuntimeError(f"{self.method}: the step at point {point} needs the layer's attention")
        positions = self.layout.positions.to(hidden.device)  # nothing removed yet: row = sequence position
        keep = self.choose(self.layout, hidden[0, positions], attention).to(hidden.device)  # [N_v] bool
        removed = (~keep).cpu()
        self.removed_at[removed] = point
        self.removed_by[removed] = PRUNED
        n_v = self.layout.num_vision_tokens
        self.steps.append(StepRecord(point, "prune", n_v, int(removed.sum()), float(removed.sum()) / n_v))
        self.finished = True
        if not removed.any():
            return hidden
        rows = torch.ones(hidden.shape[1], dtype=torch.bool, device=hidden.device)
        rows[positions[~keep]] = False
        self.alive = self.alive.to(hidden.device)[rows]
        self.version += 1
        return hidden[:, rows]

    def stats(self) -> ReductionStats:
        """What this prefill removed, in the statistics every method reports."""
        return layout_stats(self.layout, self.num_layers, self.method, self.removed_at, self.removed_by, self.steps,
                            importance_queries=self.query_rows if self.needs_attention else None)



# video_mask(features [frames, P, D], budget) -> keep [frames * P] bool, for one video
VideoMask = Callable[[torch.Tensor, float], torch.Tensor]


def keep_per_video(layout: TokenLayout, vision_hidden: torch.Tensor, budget: float,
                   video_mask: VideoMask) -> torch.Tensor:
    """keep [N_v] bool over a prompt's video tokens (vision_hidden [N_v, D]), each video on its own."""
    keep = torch.ones(layout.num_vision_tokens, dtype=torch.bool, device=vision_hidden.device)
    for grid, (start, end) in zip(layout.grids, per_video(layout)):
        if end - start != grid.frames * grid.tokens_per_frame:
            continue  # a video cut short (cannot happen with a text-terminated prompt): leave it dense
        features = vision_hidden[start:end].reshape(grid.frames, grid.tokens_per_frame, -1)
        keep[start:end] = video_mask(features, budget)
    return keep


def install_pre_llm(model: nn.Module, name: str, label: str, budget: float, video_mask: VideoMask) -> nn.Module:
    """Install a method that keeps `video_mask`'s tokens of each video from the LLM input (before layer 0)."""
    check_budget(budget)

    def make_reducer(layout, stack, device):
        return OneShotReduction(layout, stack.num_layers, device, name, 0,
                                lambda lay, hidden, _attention: keep_per_video(lay, hidden, budget, video_mask))

    return install_reducer(model, make_reducer, f"{label}(budget={budget})")
