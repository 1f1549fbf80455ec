"""What a token reducer knows of the model's decoder: its depth and which layers attend (vs. linear attention)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderStack:
    """The decoder layers as the budget and the prune rules see them.

    Point 0 is before layer 0; point l + 1 follows layer l's token mixer. A prune step ranks tokens by attention,
    so it can run only at a point that follows a full-attention layer.
    """

    linear: tuple[bool, ...]  # per layer: True where the token mixer is linear attention (no attention scores)

    @classmethod
    def attention_only(cls, num_layers: int) -> "DecoderStack":
        """A decoder whose every layer is full attention."""
        return cls((False,) * num_layers)

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.linear)

    @property
    def hybrid(self) -> bool:
        """Whether some layers are linear attention."""
        return any(self.linear)

    def attends_before(self, point: int) -> bool:
        """Whether a prune can run at `point`: it follows a full-attention layer (to rank by attention) and
        precedes another layer (after the last one, removing tokens changes no layer's KV cache)."""
        return 1 <= point < self.num_layers and not self.linear[point - 1]

    def attention_point_from(self, point: int) -> int | None:
        """The first point at or after `point` that follows a full-attention layer (None when none is left)."""
        return next((p for p in range(max(point, 1), self.num_layers + 1) if self.attends_before(p)), None)
