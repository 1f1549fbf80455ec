"""Weights of a LlavaQwen checkpoint under their original names: reading (one file or a sharded index), the
mapping to this package's module names and back, and writing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TOWER_ORIGINAL = "model.vision_tower.vision_tower.vision_model."
TOWER_OURS = "model.vision_tower."  # then "vision_model." where a transformers release nests it
# original name prefix -> prefix in LlavaQwenForVideo's state dict (first match wins), besides the tower
ORIGINAL_TO_OURS = (
    ("model.mm_projector.", "model.mm_projector."),
    ("model.image_newline", "model.image_newline"),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def to_ours(name: str, nested_tower: bool) -> str | None:
    """This package's parameter name for an original one (None: not a weight this model has). nested_tower: whether
    transformers' SiglipVisionModel keeps its layers under `.vision_model` (some transformers releases)."""
    if name.startswith(TOWER_ORIGINAL):
        return TOWER_OURS + ("vision_model." if nested_tower else "") + name[len(TOWER_ORIGINAL):]
    for original, ours in ORIGINAL_TO_OURS:
        if name.startswith(original):
            return ours + name[len(original):]
    return None


def to_original(name: str, nested_tower: bool) -> str:
    """The original checkpoint's name for one of this package's parameters."""
    if name.startswith(TOWER_OURS):
        rest = name[len(TOWER_OURS):]
        return TOWER_ORIGINAL + (rest[len("vision_model."):] if nested_tower else rest)
    for original, ours in ORIGINAL_TO_OURS:
        if name.startswith(ours):
            return original + name[len(ours):]
    raise KeyError(f"no original name for {name}")


class CheckpointWeights:
    """The safetensors files of a checkpoint folder, indexed by original tensor name (nothing read until asked)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.folder / file for name, file in weight_map.items()}
        else:
            shards = [self.folder / SINGLE] if (self.folder / SINGLE).is_file() else \
                sorted(self.folder.glob("*.safetensors"))
            if not shards:
                raise FileNotFoundError(f"{self.folder}: no {SINGLE}, {INDEX} or *.safetensors (LlavaQwen checkpoints "
                                        "are read from safetensors)")
            self.files = {}
            for shard in shards:
                with safe_open(str(shard), framework="pt") as handle:
                    self.files.update(dict.fromkeys(handle.keys(), shard))

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return list(self.files)

    def shape(self, name: str) -> list[int]:
        """The shape of one tensor, read from the file header."""
        if name not in self.files:
            raise KeyError(f"the checkpoint has no tensor {name}")
        with safe_open(str(self.files[name]), framework="pt") as handle:
            return list(handle.get_slice(name).get_shape())

    def count_layers(self, prefix: str) -> int:
        """How many numbered layers `prefix<i>.` the checkpoint holds (0..n-1)."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {int(m.group(1)) for name in self.files if (m := pattern.match(name))}
        return max(found) + 1 if found else 0

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(original name, tensor) for every tensor, one file open at a time."""
        by_file: dict[Path, list[str]] = {}
        for name, file in self.files.items():
            by_file.setdefault(file, []).append(name)
        for file, names in by_file.items():
            with safe_open(str(file), framework="pt") as handle:
                for name in names:
                    yield name, handle.get_tensor(name)


def save_weights(state: dict[str, torch.Tensor], folder: Path, nested_tower: bool,
                 max_shard_bytes: int | None = None) -> None:
    """Write a state dict of this package's names under the original names (sharded with an index past the size)."""
    original = {to_original(name, nested_tower): tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    total = sum(t.numel() * t.element_size() for t in original.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(original, str(folder / SINGLE), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in original.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
