"""MiniCPM-V 2.6 weights under their original names (vpm.*, resampler.*, llm.model.*, llm.lm_head.*).

The model is built on the meta device and every parameter is assigned from the checkpoint's safetensors (one file,
or shards listed in model.safetensors.index.json), so no random initialisation runs and nothing is held twice.
The decoder's rotary table, the one buffer the checkpoint does not hold, is then built on the real device.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

# (original prefix, ours), in the order names are tried
RENAMES = (
    ("llm.model.", "model.language_model."),
    ("llm.lm_head.", "lm_head."),
    ("vpm.", "model.vision_tower."),
    ("resampler.", "model.resampler."),
)
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def to_ours(name: str) -> str | None:
    """Our parameter name for an original one (None: not a MiniCPM-V 2.6 weight)."""
    return next((ours + name[len(original):] for original, ours in RENAMES if name.startswith(original)), None)


def to_original(name: str) -> str:
    """The original name of one of our parameters."""
    for original, ours in RENAMES:
        if name.startswith(ours):
            return original + name[len(ours):]
    raise KeyError(f"{name} has no original MiniCPM-V 2.6 name")


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files; FileNotFoundError naming what is missing."""
    index = folder / INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: {INDEX_FILE} lists {', '.join(missing)}, which is not there")
        return [folder / name for name in shards]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise FileNotFoundError(f"{folder} has no {SINGLE_FILE} or {INDEX_FILE} (MiniCPM-V 2.6 is read from safetensors)")


def original_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(original name, tensor) for every tensor of the checkpoint, shard by shard."""
    from safetensors import safe_open

    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def load_original_weights(model: nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """Assign every parameter of a meta-device `model` from the checkpoint (cast to dtype); ValueError naming any
    tensor the model lacks or any parameter the checkpoint lacks."""
    expected = dict(model.named_parameters())
    loaded: set[str] = set()
    unknown: list[str] = []
    for original, tensor in original_tensors(folder):
        ours = to_ours(original)
        if ours not in expected:
            unknown.append(original)
            continue
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise ValueError(f"{original}: shape {tuple(tensor.shape)} in the checkpoint, {tuple(expected[ours].shape)} "
                             "from config.json")
        _assign(model, ours, nn.Parameter(tensor.to(dtype), requires_grad=False))
        loaded.add(ours)
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint tensors are not part of MiniCPM-V 2.6 as config.json describes "
                         f"it: {', '.join(sorted(unknown)[:8])}{' ...' if len(unknown) > 8 else ''}")
    missing = sorted(set(expected) - loaded)
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weights: "
                         f"{', '.join(to_original(name) for name in missing[:8])}{' ...' if len(missing) > 8 else ''}")


def _assign(model: nn.Module, name: str, value: nn.Parameter) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf, value)


def original_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters under their original names (what the original code saves and reads)."""
    return {to_original(name): tensor.detach().contiguous() for name, tensor in model.named_parameters()}


def save_original_weights(model: nn.Module, folder: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's parameters under their original names to folder/model.safetensors."""
    from safetensors.torch import save_file

    path = folder / SINGLE_FILE
    save_file(original_state_dict(model), str(path), metadata={"format": "pt", **dict(metadata or {})})
    return path
