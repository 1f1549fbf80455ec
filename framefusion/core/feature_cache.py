"""Vision features computed once and served again: a bounded LRU of the model's get_video_features /
get_image_features outputs, keyed by the content of their inputs, served through a wrapper on the patch stack.

The key is a SHA-256 of every argument of the encoder call (pixel tensors byte for byte, grids, options), so a
hit returns what the encoder would compute for exactly these inputs: nothing is approximated. An entry keeps only
what the LLM reads (`pooler_output`, and Qwen3-VL's `deepstack_features`), not the encoder's intermediate states,
plus the saliency a vision-encoder probe recorded while the features were made (VisionZip, FastVID and HoliTom rank
by it), which a hit hands back to the probe registered on the module under SALIENCY_PROBE. Attributes framefusion
tags on the output (the engine's video metadata) are kept with it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from framefusion.core.patches import PatchStack

ENCODERS = ("get_video_features", "get_image_features")  # where every supported family encodes pixels
KEPT_FIELDS = ("pooler_output", "deepstack_features")  # what the LLM's forward reads from an encoder output
SALIENCY_PROBE = "_framefusion_saliency_probe"  # module attribute: the vision-saliency probe of the installed method
TAG_PREFIX = "_framefusion"  # attributes framefusion sets on encoder outputs (kept in cached copies)


@dataclass
class CachedFeatures:
    """One encoder call's output as the LLM reads it, and what it cost."""

    output: Any  # the slimmed encoder output (a ModelOutput with KEPT_FIELDS, a tensor or a tuple of tensors)
    saliency: torch.Tensor | None  # [N] vision-encoder saliency recorded with it, when a probe was installed
    nbytes: int
    seconds: float  # time the encoder took to make it
    label: str = ""  # what the caller called it (e.g. the video path and sampling)


class FeatureCache:
    """Encoder outputs by the content of their inputs, least recently used first out beyond `max_bytes`
    (None: unbounded, e.g. one session's own videos)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, CachedFeatures] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.saved_s = 0.0  # encoder seconds the hits did not spend (each hit: its entry's cost)
        self.label = ""  # the caller's name for entries made from now on

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries."""
        return sum(entry.nbytes for entry in self.entries.values())

    def counters(self) -> dict[str, int]:
        """hits, misses, evictions, entries and bytes (for statistics)."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "entries": len(self.entries), "bytes": self.nbytes}

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self.entries.clear()

    def get(self, key: str) -> CachedFeatures | None:
        """The entry for `key` (now the most recently used), or None."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedFeatures) -> None:
        """Store an entry, evicting the least recently used ones beyond max_bytes (one larger than the limit is
        not stored)."""
        self.entries.pop(key, None)
        if self.max_bytes is not None and entry.nbytes > self.max_bytes:
            return
        self.entries[key] = entry
        while self.max_bytes is not None and self.nbytes > self.max_bytes:
            self.entries.popitem(last=False)
            self.evictions += 1

    @contextmanager
    def serving(self, module: nn.Module, patches: PatchStack) -> Iterator["FeatureCache"]:
        """Serve `module`'s encoder calls from this cache while the block runs (wrappers on `patches`, outermost
        over the method's probes and the engine's tags, undone on exit)."""
        with patches.scope():
            for name in ENCODERS:
                if getattr(module, name, None) is not None:
                    patches.wrap_method(module, name, lambda original, name=name: self._wrap(module, name, original),
                                        f"feature cache: {name}")
            yield self

    def _wrap(self, module: nn.Module, name: str, original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)  # generate reads the signature to pick the encoder's arguments
        def encode(*args, **kwargs):
            key = content_key(name, signature.bind_partial(*args, **kwargs).arguments)
            probe = module.__dict__.get(SALIENCY_PROBE) if name == "get_video_features" else None
            entry = self.get(key)
            if entry is not None and (probe is None or entry.saliency is not None):
                self.hits += 1
                self.saved_s += entry.seconds
                if probe is not None:
                    probe.serve(entry.saliency)
                return entry.output
            self.misses += 1
            start = time.perf_counter()
            output = original(*args, **kwargs)
            kept = slim_output(output)
            if kept is None:
                return output
            saliency = probe.latest if probe is not None else None
            self.put(key, CachedFeatures(kept, saliency, output_bytes(kept, saliency),
                                         time.perf_counter() - start, self.label))
            return kept

        return encode


def content_key(name: str, arguments: dict[str, Any]) -> str:
    """SHA-256 over an encoder call: its name and every argument (tensors by dtype, shape and bytes)."""
    digest = hashlib.sha256(name.encode())
    for argument in sorted(arguments):
        digest.update(f"|{argument}=".encode())
        _digest_value(digest, arguments[argument])
    return digest.hexdigest()


def _digest_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(f"tensor{tuple(value.shape)}{value.dtype}".encode())
        digest.update(tensor_bytes(value))
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _digest_value(digest, item)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"{key}:".encode())
            _digest_value(digest, value[key])
    else:
        digest.update(repr(value).encode())


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes (on the CPU, contiguous), for hashing."""
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def slim_output(output: Any) -> Any:
    """What the LLM reads of an encoder output: a ModelOutput cut to KEPT_FIELDS (framefusion's tags kept), a
    tensor or tuple of tensors as it is; None for anything else (not cached)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output if all(isinstance(item, torch.Tensor) for item in output) else None
    keys = getattr(output, "keys", None)
    if keys is None:
        return None
    kept = type(output)(**{field: output[field] for field in KEPT_FIELDS if field in keys()})
    for attribute, value in vars(output).items():
        if attribute.startswith(TAG_PREFIX):
            setattr(kept, attribute, value)
    return kept


def output_bytes(*values: Any) -> int:
    """Bytes of the distinct tensor storages in `values` (nested tuples, lists and ModelOutputs)."""
    seen: dict[int, int] = {}

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, (tuple, list)):
            for item in value:
                visit(item)
        elif hasattr(value, "keys") and hasattr(value, "__getitem__"):
            for key in value.keys():
                visit(value[key])

    for value in values:
        visit(value)
    return sum(seen.values())
