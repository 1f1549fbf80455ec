"""Measuring a model call: device-synchronised clocks, vision-encoder time, peak memory, KV-cache bytes."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from framefusion.adapters import adapter_for
from framefusion.core.patches import patch_scope

ENCODER_METHODS = ("get_video_features", "get_image_features")  # where every supported family encodes pixels


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on the device, so that host clocks measure finished work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def clock(device: torch.device | str) -> float:
    """Seconds on a monotonic clock, read after the device's queued work is done."""
    synchronize(device)
    return time.perf_counter()


class EncoderTimer:
    """Adds up the time spent in the model's vision encoder (nested encoder calls count once)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.seconds = 0.0
        self._depth = 0

    def wrap(self, function: Callable) -> Callable:
        """`function`, timed; functools.wraps keeps the signature `generate` inspects."""

        @functools.wraps(function)
        def timed(*args, **kwargs):
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            start = clock(self.device)
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += clock(self.device) - start
                self._depth -= 1

        return timed


@contextmanager
def time_vision_encoder(model: nn.Module, device: torch.device | str) -> Iterator[EncoderTimer]:
    """Time the model's get_video_features / get_image_features while the block runs (wrappers on the model's
    patch stack, undone on exit)."""
    timer = EncoderTimer(device)
    module = adapter_for(model).multimodal_module(model)
    with patch_scope(model) as patches:
        for name in ENCODER_METHODS:
            if getattr(module, name, None) is not None:
                patches.wrap_method(module, name, timer.wrap, f"timer: {name}")
        yield timer


@dataclass
class PeakMemory:
    """Peak memory of a block: CUDA bytes allocated by tensors, else the process's resident set size."""

    bytes: int = 0
    kind: str = "rss"  # "cuda_allocated" or "rss"


@contextmanager
def track_peak_memory(device: torch.device | str, interval_s: float = 0.002) -> Iterator[PeakMemory]:
    """Measure peak memory during the block.

    CUDA: torch.cuda.max_memory_allocated after resetting the peak (tensors only, weights included).
    CPU and MPS: the largest resident set size of the whole process, sampled every `interval_s` by a
    background thread (psutil; without psutil, the process's lifetime peak from getrusage).
    """
    device = torch.device(device)
    peak = PeakMemory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        peak.kind = "cuda_allocated"
        try:
            yield peak
        finally:
            synchronize(device)
            peak.bytes = int(torch.cuda.max_memory_allocated(device))
        return
    sampler = _RssSampler(interval_s)
    sampler.start()
    try:
        yield peak
    finally:
        peak.bytes = sampler.stop()


class _RssSampler:
    """A daemon thread that keeps the largest RSS of this process seen between start() and stop()."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._process = psutil.Process()
        except ImportError:
            self._process = None

    def _sample(self) -> None:
        self.peak = max(self.peak, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        """Begin sampling."""
        if self._process is None:
            return
        self._sample()
        self._thread = threading.Thread(target=self._run, name="framefusion-rss", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling and return the peak RSS in bytes."""
        if self._process is None:
            import resource
            import sys

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            return int(maxrss if sys.platform == "darwin" else maxrss * 1024)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return int(self.peak)


def cache_bytes(cache: Any) -> int:
    """Bytes held by the key and value tensors of a KV cache (a transformers Cache or legacy tuples)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    elif hasattr(cache, "key_cache"):
        pairs = list(zip(cache.key_cache, cache.value_cache))
    else:
        pairs = [tuple(entry[:2]) for entry in cache or ()]
    return sum(_tensor_bytes(t) for pair in pairs for t in pair)


def _tensor_bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0
