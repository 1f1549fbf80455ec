"""Pre-LLM selections computed once per video: what a method that reduces each video before the LLM (VidCom2,
EVS, VisionZip, FastVID, HoliTom's outer stage) chose for a video, served again when the same video comes back.

Such a selection is a function of the video's features (and the vision encoder's saliency), the budget and the
method's parameters only: the question plays no part. A memo belongs to one session (one method, one parameter
set); its key is the method's name, the budget and a SHA-256 of the features and saliency, so a hit is the
selection these exact inputs give. It keeps the kept tokens' new features only (the others leave the prompt).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.core.feature_cache import tensor_bytes

MEMO_ATTRIBUTE = "_framefusion_selection_memo"  # on a model while a session runs a question


@dataclass
class MemoEntry:
    """One video's selection: keep [n] bool, the kept tokens' features [k, D] (None: unchanged), merged_into [n]."""

    keep: torch.Tensor
    kept_features: torch.Tensor | None
    merged_into: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(t.numel() * t.element_size() for t in (self.keep, self.kept_features, self.merged_into)
                   if t is not None)


class SelectionMemo:
    """Selections by (method, budget, content of the video's features and saliency)."""

    def __init__(self) -> None:
        self.entries: dict[str, MemoEntry] = {}
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries."""
        return sum(entry.nbytes for entry in self.entries.values())

    def clear(self) -> None:
        """Forget every selection."""
        self.entries.clear()

    def key(self, method: str, budget: float, features: torch.Tensor, saliency: torch.Tensor | None) -> str:
        """The key of one video's selection."""
        digest = hashlib.sha256(f"{method}|{budget!r}|{tuple(features.shape)}{features.dtype}".encode())
        digest.update(tensor_bytes(features))
        if saliency is not None:
            digest.update(f"|saliency{tuple(saliency.shape)}{saliency.dtype}".encode())
            digest.update(tensor_bytes(saliency))
        return digest.hexdigest()

    def get(self, key: str) -> MemoEntry | None:
        """The stored selection, counting a hit or a miss."""
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: MemoEntry) -> None:
        """Store one video's selection."""
        self.entries[key] = entry


def memo_of(model: nn.Module | None) -> SelectionMemo | None:
    """The selection memo a session put on the model (None outside a session)."""
    return None if model is None else model.__dict__.get(MEMO_ATTRIBUTE)
