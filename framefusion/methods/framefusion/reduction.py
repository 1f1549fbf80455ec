"""One reducing prefill: which tokens are alive, and the merge / prune steps applied to the hidden states."""

from __future__ import annotations

import torch

from framefusion.core.budget import prune_ratio
from framefusion.core.contract import QueryKeys, Reducer
from framefusion.core.layout import TokenLayout
from framefusion.core.merge import chain_order, choose_merges, group_heads, merge_groups, predecessor_similarity
from framefusion.core.prune import attention_importance, keep_most_important, keep_one_per_video
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import KEPT, MERGED, PRUNED, ReductionStats, StepRecord
from framefusion.methods.framefusion.config import FrameFusionConfig


class PrefillReduction(Reducer):
    """FrameFusion's state machine over the reduction points of one prefill (batch size 1).

    Point 0 is before layer 0's attention, point l + 1 after layer l's attention. At each point at most one
    step runs: prune once merging has ended, else merge while merging has not ended. A prune ranks by attention,
    so on a hybrid decoder it waits for the next point after an attention layer, with the budget corrected
    for the layers in between (budget.prune_ratio's `point`).
    """

    def __init__(self, layout: TokenLayout, config: FrameFusionConfig, stack: DecoderStack, device: torch.device,
                 threshold_source: str | None = None):
        if config.importance_queries is None:
            raise ValueError("PrefillReduction needs a resolved importance_queries (FrameFusionConfig.with_family_default)")
        self.layout = layout
        self.config = config
        self.threshold_source = threshold_source  # where config.similarity_lower_bound comes from (for the records)
        self.query_rows = config.importance_queries  # last prompt rows the prune step's importance averages over
        self.stack = stack
        self.num_layers = stack.num_layers
        self.device = device
        n_v = layout.num_vision_tokens
        self.alive = torch.arange(layout.seq_len, device=device)  # [n_alive] sequence positions
        self.version = 0  # bumps whenever `alive` changes
        self.positions = layout.positions.to(device)  # [N_v]
        self.video = layout.video.to(device)
        key = layout.video * (int(layout.patch.max()) + 1 if n_v else 1) + layout.patch
        self.chain_key = key.to(device)  # [N_v] equal for tokens of one (video, patch)
        self.chain = chain_order(layout.video, layout.patch).to(device)  # alive vision ids, chain order
        self.row_of_position = torch.arange(layout.seq_len, device=device)  # -1 once removed
        self.merge_ratios: list[float] = []
        self.merging_done = n_v == 0
        self.pruning_done = n_v == 0
        self.removed_at = torch.full((n_v,), -1, dtype=torch.long, device=device)
        self.removed_by = torch.full((n_v,), KEPT, dtype=torch.long, device=device)
        self.merged_into = torch.full((n_v,), -1, dtype=torch.long, device=device)
        self.steps: list[StepRecord] = []

    @property
    def finished(self) -> bool:
        """True once no further step can happen."""
        return self.merging_done and self.pruning_done

    def prunes_at(self, point: int) -> bool:
        """Whether the step at this point (>= 1) is a prune step, known before the layer's attention runs."""
        if point < 1 or self.pruning_done or not self.stack.attends_before(point):
            return False
        return self.merging_done or self._cap() >= 1.0

    def step(self, point: int, hidden: torch.Tensor, attention: QueryKeys | None = None) -> torch.Tensor:
        """Run the step due at `point` on hidden [1, n_alive, D]; returns the reduced hidden states."""
        if self.finished:
            return hidden
        if hidden.device != self.device:
            self._move_to(hidden.device)
        if self.prunes_at(point):
            if attention is None:
                raise RuntimeError(f"FrameFusion: the prune step at point {point} needs the layer's attention")
            return self._prune(point, hidden, attention)
        if not self.merging_done:
            cap = self._cap()
            if cap >= 1.0:  # the budget is spent (only after a linear layer: elsewhere that is a prune point)
                self._end_merging(point)
                return hidden
            return self._merge(point, hidden, cap)
        return hidden

    def _cap(self) -> float:
        return prune_ratio(self.num_layers, self.config.cost, self.merge_ratios)

    def _end_merging(self, point: int) -> None:
        """Merging is over; pruning is too when no attention layer is left to rank tokens after this point."""
        self.merging_done = True
        if self.stack.attention_point_from(point + 1) is None:
            self.pruning_done = True

    def _merge(self, point: int, hidden: torch.Tensor, cap: float) -> torch.Tensor:
        chain = self.chain
        rows = self.row_of_position[self.positions[chain]]  # [n] hidden rows, chain order
        states = hidden[0]
        sim = predecessor_similarity(states[rows], self.chain_key[chain])
        merged, ratio, capped = choose_merges(sim, self.config.similarity_lower_bound, cap, self.positions[chain])
        states, dropped_rows = merge_groups(states, rows, merged)
        members = chain[merged]
        self.merged_into[members] = chain[group_heads(merged)[merged]]
        self._mark_removed(members, point, MERGED)
        self.steps.append(StepRecord(point, "merge", chain.numel(), members.numel(), ratio, capped))
        if capped:
            self.merging_done = self.pruning_done = True
        else:
            self.merge_ratios.append(ratio)
            if ratio < self.config.ratio_lower_bound:
                self._end_merging(point)
        self.chain = chain[~merged]
        return self._drop_rows(states[None], dropped_rows)

    def _prune(self, point: int, hidden: torch.Tensor, attention: QueryKeys) -> torch.Tensor:
        chain = self.chain
        rows = self.row_of_position[self.positions[chain]]
        importance = attention_importance(attention.queries, attention.keys, attention.scaling)[rows]
        ratio = prune_ratio(self.num_layers, self.config.cost, self.merge_ratios, point)
        n = chain.numel()
        keep_count = round(n * (1.0 - ratio)) if ratio < 1.0 else 0
        if keep_count > 0:
            keep = keep_most_important(importance, keep_count, self.positions[chain])
        else:  # budget spent: the smallest count allowed is one token per video
            keep = keep_one_per_video(importance, self.video[chain], self.positions[chain])
        removed = chain[~keep]
        self._mark_removed(removed, point, PRUNED)
        self.steps.append(StepRecord(point, "prune", n, removed.numel(), ratio))
        self.merging_done = self.pruning_done = True
        self.chain = chain[keep]
        return self._drop_rows(hidden, rows[~keep])

    def _move_to(self, device: torch.device) -> None:
        """Follow the hidden states to another device (layers split over devices by accelerate)."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        self.device = device

    def _mark_removed(self, vision_ids: torch.Tensor, point: int, how: int) -> None:
        self.removed_at[vision_ids] = point
        self.removed_by[vision_ids] = how

    def _drop_rows(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Remove the given rows of hidden [1, n_alive, D], keeping order and original positions."""
        if rows.numel() == 0:
            return hidden
        keep = torch.ones(self.alive.numel(), dtype=torch.bool, device=self.device)
        keep[rows] = False
        self.row_of_position[self.alive[~keep]] = -1
        self.alive = self.alive[keep]
        self.row_of_position[self.alive] = torch.arange(self.alive.numel(), device=self.device)
        self.version += 1
        return hidden[:, keep]

    def stats(self, method: str = "framefusion") -> ReductionStats:
        """Summarise what this prefill did."""
        rows, cols = self.layout.rows_cols()
        grid = torch.stack([self.layout.video, self.layout.frame, rows, cols], dim=1)
        return ReductionStats(
            method=method,
            num_layers=self.num_layers,
            seq_len=self.layout.seq_len,
            vision_positions=self.layout.positions.clone(),
            token_grid=grid,
            grids=self.layout.grids,
            removed_at=self.removed_at.cpu(),
            removed_by=self.removed_by.cpu(),
            merged_into=self.merged_into.cpu(),
            steps=list(self.steps),
            importance_queries=self.query_rows,
            similarity_threshold=self.config.similarity_lower_bound,
            threshold_source=self.threshold_source,
        )

