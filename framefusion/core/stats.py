"""What one reducing prefill did: per-layer token counts, merges, prunes, and each vision token's place."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from framefusion.core.budget import ideal_speedup, kept_ratio, paper_layer_cost
from framefusion.core.layout import VideoGrid

KEPT, MERGED, PRUNED = 0, 1, 2


@dataclass(frozen=True)
class StepRecord:
    """One reduction step. `point` 0 is before layer 0's attention; point l + 1 is after layer l's attention."""

    point: int
    kind: str  # "merge" or "prune"
    vision_before: int  # alive vision tokens when the step ran
    removed: int
    ratio: float  # merge: similar tokens / alive vision tokens; prune: the prune ratio r(m) used
    capped: bool = False  # merge: only the top floor(cap * n) candidates merged (merging and pruning end)


@dataclass
class ReductionStats:
    """Statistics of the last reducing prefill, enough to redraw merged and pruned patches on the frames."""

    method: str
    num_layers: int
    seq_len: int
    vision_positions: torch.Tensor  # [N_v] sequence positions of the video tokens
    token_grid: torch.Tensor  # [N_v, 4] (video, frame, row, col) of each video token
    grids: tuple[VideoGrid, ...]
    removed_at: torch.Tensor  # [N_v] point at which the token left (-1: alive to the end)
    removed_by: torch.Tensor  # [N_v] KEPT, MERGED or PRUNED
    merged_into: torch.Tensor  # [N_v] index (into the N_v tokens) of the token it merged into, -1 if none
    steps: list[StepRecord] = field(default_factory=list)
    importance_queries: int | None = None  # query rows a prune step averaged attention over (None: no such step)
    linear_layers: tuple[bool, ...] = ()  # per layer, True for linear attention (hybrid decoders; set by the engine)
    similarity_threshold: float | None = None  # FrameFusion: the S_threshold that ran (None: other methods)
    threshold_source: str | None = None  # FrameFusion: where it came from (given, calibrated, family default)

    @property
    def num_vision_tokens(self) -> int:
        """N_v."""
        return int(self.vision_positions.numel())

    def vision_tokens_per_layer(self) -> list[int]:
        """Vision tokens in each layer's KV cache (alive at its attention input)."""
        gone = self.removed_at
        alive_until = torch.where(gone < 0, torch.full_like(gone, self.num_layers + 1), gone)
        layers = torch.arange(self.num_layers)
        return (alive_until[None, :] > layers[:, None]).sum(dim=1).tolist()

    def tokens_per_layer(self) -> list[int]:
        """All tokens (text, images, video) in each layer's KV cache."""
        others = self.seq_len - self.num_vision_tokens
        return [others + n for n in self.vision_tokens_per_layer()]

    def ffn_tokens_per_layer(self) -> list[int]:
        """All tokens entering each layer's FFN (after the reduction point that follows its attention)."""
        alive = [int(self.alive_after(layer + 1).sum()) for layer in range(self.num_layers)]
        return [self.seq_len - self.num_vision_tokens + n for n in alive]

    def similarity_layers(self) -> list[bool]:
        """Whether each layer computed merge similarities (point 0 counts for layer 0)."""
        points = {s.point for s in self.steps if s.kind == "merge"}
        return [layer + 1 in points or (layer == 0 and 0 in points) for layer in range(self.num_layers)]

    def ideal_speedup(self, hidden_size: int, ffn_size: int) -> float:
        """Dense over reduced prefill FLOPs of the decoder stack by the paper's cost model (appendix 9)."""
        return ideal_speedup(self.seq_len, self.tokens_per_layer(), self.ffn_tokens_per_layer(),
                             paper_layer_cost(hidden_size, ffn_size), self.similarity_layers(), self.linear_layers)

    @property
    def kept_ratio(self) -> float:
        """Achieved budget: mean over layers of vision tokens in the KV cache over N_v (1.0 when dense)."""
        return kept_ratio(self.vision_tokens_per_layer(), self.num_vision_tokens)

    @property
    def prefill_ratio(self) -> float:
        """Mean over layers of the vision tokens the prefill ran through each layer, over N_v: the kept_ratio for
        methods whose prefill holds what the KV cache keeps; more where the cache is cut after prefill (DyCoke)
        or the prefill runs every token (StreamingLLM)."""
        return self.kept_ratio

    def alive_after(self, point: int) -> torch.Tensor:
        """[N_v] bool: still present after the given reduction point."""
        return (self.removed_at < 0) | (self.removed_at > point)

    def representatives(self, point: int) -> torch.Tensor:
        """[N_v] index of the alive token that holds each token after `point` (itself if alive, -1 if pruned)."""
        owner = torch.arange(self.num_vision_tokens)
        merged = (self.removed_by == MERGED) & (self.removed_at >= 0) & (self.removed_at <= point)
        pruned = (self.removed_by == PRUNED) & (self.removed_at >= 0) & (self.removed_at <= point)
        owner = torch.where(merged, self.merged_into, owner)
        for _ in range(max(1, len(self.steps))):  # follow merge chains; each step adds at most one hop
            owner = torch.where(merged[owner], self.merged_into[owner], owner)
        owner = torch.where(pruned[owner] | pruned, torch.full_like(owner, -1), owner)
        return owner

    @property
    def last_merge_point(self) -> int:
        """The point of the last merge step (-1 when nothing merged)."""
        points = [s.point for s in self.steps if s.kind == "merge"]
        return max(points) if points else -1

    def to_dict(self) -> dict:
        """A JSON-ready summary (no per-token arrays)."""
        return {
            "method": self.method,
            "num_layers": self.num_layers,
            "seq_len": self.seq_len,
            "vision_tokens": self.num_vision_tokens,
            "kept_ratio": self.kept_ratio,
            "prefill_ratio": self.prefill_ratio,
            "tokens_per_layer": self.tokens_per_layer(),
            "vision_tokens_per_layer": self.vision_tokens_per_layer(),
            "steps": [s.__dict__ for s in self.steps],
            "importance_queries": self.importance_queries,
            "similarity_threshold": self.similarity_threshold,
            "threshold_source": self.threshold_source,
        }
