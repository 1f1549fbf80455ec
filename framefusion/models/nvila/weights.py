"""Reading and writing one NVILA part's safetensors under its published names (single file or sharded)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a part folder: model.safetensors, or the shards its index names."""
    if (folder / SINGLE).is_file():
        return load_file(folder / SINGLE)
    index = folder / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{folder} has neither {SINGLE} nor {INDEX}")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(folder / shard))
    return state


def write_state_dict(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """One model.safetensors with the given names (contiguous copies, pt format metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}, folder / SINGLE,
              metadata={"format": "pt"})


def load_into(module: torch.nn.Module, folder: Path, what: str) -> None:
    """Load a part's published tensors into `module` (strict: names and shapes must all match)."""
    state = read_state_dict(folder)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what} weights in {folder} do not match the {what}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{what} weight {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    module.load_state_dict(state)
