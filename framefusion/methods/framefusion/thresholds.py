"""FrameFusion's similarity threshold S_threshold: given by the user, calibrated for this very model, or the
model family's default (each adapter says where its default comes from).

Calibrations (framefusion.pipeline.calibrate) are stored in one JSON file, `calibrations.json` in the cache
folder ($FRAMEFUSION_CACHE, else $XDG_CACHE_HOME/framefusion, else ~/.cache/framefusion), keyed by a fingerprint of
the model's weights: a restart keeps them, and a different checkpoint never picks one up. The file is replaced
atomically, so an interrupted write leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framefusion.adapters import adapter_for

STORE_NAME = "calibrations.json"
FINGERPRINT_VALUES = 64  # leading values of every parameter that enter the fingerprint


@dataclass(frozen=True)
class Threshold:
    """The similarity threshold a FrameFusion run uses, and where it comes from."""

    value: float
    source: str  # "given", "calibrated" or "family default"
    detail: str  # e.g. "on 12 videos, 16 frames" or where the family's default comes from

    def describe(self) -> str:
        """One line for records: the source and its detail."""
        return f"{self.source}: {self.detail}" if self.detail else self.source


def cache_folder() -> Path:
    """Where framefusion keeps what it learns about models (calibrations)."""
    if os.environ.get("FRAMEFUSION_CACHE"):
        return Path(os.environ["FRAMEFUSION_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "framefusion"


def store_path() -> Path:
    """The calibration store."""
    return cache_folder() / STORE_NAME


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's class, parameter names and shapes, and the leading values of every parameter
    (rounded to bf16, so the same checkpoint loaded in fp32 or bf16 gives the same fingerprint)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            digest.update(f"{name}:{tuple(parameter.shape)}".encode())
            if parameter.is_meta:  # offloaded by accelerate: its shape only
                continue
            head = parameter.detach().flatten()[:FINGERPRINT_VALUES].to("cpu", torch.bfloat16).float()
            digest.update(head.numpy().tobytes())
    return digest.hexdigest()[:24]


def read_store(path: Path | None = None) -> dict[str, Any]:
    """The stored calibrations by fingerprint ({} when there is no store or it cannot be read)."""
    path = path or store_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    return models if isinstance(models, dict) else {}


def stored_calibration(model: nn.Module) -> dict[str, Any] | None:
    """The calibration stored for this model, or None (the model's weights are only hashed when some calibration
    is stored)."""
    store = read_store()
    record = store.get(model_fingerprint(model)) if store else None
    return record if isinstance(record, dict) and isinstance(record.get("threshold"), (int, float)) else None


def save_calibration(fingerprint: str, record: dict[str, Any] | None) -> Path:
    """Store a model's calibration (replacing an older one for the same fingerprint; None removes it) atomically;
    returns the path."""
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    models = read_store(path)
    if record is None:
        models.pop(fingerprint, None)
    else:
        models[fingerprint] = record
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".calibrations-", suffix=".tmp", delete=False)
    try:
        with handle:
            json.dump({"version": 1, "models": models}, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def forget_calibration(model: nn.Module) -> bool:
    """Remove the calibration stored for this model; whether there was one."""
    if stored_calibration(model) is None:
        return False
    save_calibration(model_fingerprint(model), None)
    return True


def resolve_threshold(model: nn.Module, given: float | None = None) -> Threshold:
    """The threshold a FrameFusion run on `model` uses: `given`, else the model's stored calibration, else its
    family's default."""
    if given is not None:
        return Threshold(float(given), "given", "by the user")
    record = stored_calibration(model)
    if record is not None:
        return Threshold(float(record["threshold"]), "calibrated",
                         f"on {record.get('videos', '?')} videos, {record.get('frames', '?')} frames "
                         f"({record.get('created', 'date unknown')})")
    adapter = adapter_for(model)
    return Threshold(adapter.similarity_threshold, "family default", f"{adapter.name}: {adapter.threshold_source}")
