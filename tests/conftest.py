"""Shared fixtures: cached tiny random models and synthetic video clips."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Any, Callable


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist each worker gets its share of the cores for torch's threads (and the processes it
    starts inherit it): with every worker on every core, the suite ran 6x slower on two cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores_between_workers()  # before torch is imported: it reads OMP_NUM_THREADS once
# calibrations go to a folder of the test run's own, never the user's cache (CLI subprocesses inherit it)
os.environ["FRAMEFUSION_CACHE"] = tempfile.mkdtemp(prefix="framefusion-test-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from framefusion.video import VideoClip, decord_available

NOT_APPLICABLE = "decord is not installed on this platform (its wheels exist for Linux x86_64 and Windows only)"


def uses_decord(item: pytest.Item) -> bool:
    """A test marked `decord`, or parametrized with decoder='decord'."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return item.get_closest_marker("decord") is not None or params.get("decoder") == "decord"


def lmms_eval_available() -> bool:
    """Whether the optional lmms-eval extra is installed."""
    return importlib.util.find_spec("lmms_eval") is not None


def not_applicable(item: pytest.Item) -> bool:
    """A test this installation cannot run: decord where it has no wheel, lmms-eval without its extra."""
    return ((not decord_available() and uses_decord(item))
            or (not lmms_eval_available() and item.get_closest_marker("lmms_eval") is not None))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests this installation cannot run are deselected: not run, and never counted as passed."""
    skipped = [item for item in items if not_applicable(item)]
    if skipped:
        items[:] = [item for item in items if not not_applicable(item)]
        config.hook.pytest_deselected(items=skipped)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say in one place why some tests did not run."""
    if not decord_available():
        terminalreporter.write_line(f"not applicable: every decord test was deselected: {NOT_APPLICABLE}")
    if not lmms_eval_available():
        terminalreporter.write_line('not applicable: the lmms-eval tests were deselected: the extra is not installed '
                                    '(pip install -e ".[test,lmms-eval]")')


def make_random_clip(
    num_frames: int = 8,
    size: int = 64,
    seed: int = 0,
    static: bool = False,
    static_fraction: float = 0.0,
    fps: float = 30.0,
    interval: float = 0.5,
) -> VideoClip:
    """A synthetic clip of random uint8 frames, `interval` seconds apart in a `fps` source.

    static=True: every frame is identical. static_fraction=f: the top round(f * size) rows are the
    same in every frame and the rest is fresh noise per frame (f=1 is the same as static=True).
    """
    if not 0.0 <= static_fraction <= 1.0:
        raise ValueError(f"static_fraction must be in [0, 1]; got {static_fraction}")
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)  # [T, H, W, 3]
    static_rows = size if static else int(round(static_fraction * size))
    frames[:, :static_rows] = frames[0, :static_rows]
    timestamps = np.arange(num_frames, dtype=np.float64) * interval  # [T] seconds
    return VideoClip(frames=frames, timestamps=timestamps, fps=fps, duration=num_frames * interval, source=None)


def generate_reduced(model: torch.nn.Module, inputs: Any, new_tokens: int, method: str, budget: float = 0.3,
                     **params: Any) -> tuple[torch.Tensor, Any]:
    """Greedy-generate new_tokens with `method` installed for the call by framefusion.reduced (the tiny models are
    shared between tests: it is removed whatever happens): (generated ids [1, prompt + new], the statistics)."""
    from framefusion import reduced

    with reduced(model, method, budget, **params) as run, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        return out, run.stats


def forward_reduced(model: torch.nn.Module, inputs: Any, method: str, budget: float = 0.3,
                    **params: Any) -> tuple[torch.Tensor, Any]:
    """One forward with `method` installed for the call by framefusion.reduced: (logits, the statistics)."""
    from framefusion import reduced

    with reduced(model, method, budget, **params) as run, torch.no_grad():
        return model(**inputs).logits, run.stats


@pytest.fixture
def random_clip() -> Callable[..., VideoClip]:
    """make_random_clip(num_frames=8, size=64, seed=0, static=False, static_fraction=0.0, ...)."""
    return make_random_clip


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., tuple[torch.nn.Module, Any]]:
    """factory(family, **build_tiny_model_kwargs) -> (model, processor), built once per session per arguments.

    The instances are shared between tests: undo any in-place change (e.g. remove_framefusion) before
    the test ends.
    """
    from framefusion.tiny import build_tiny_model

    cache: dict[str, tuple[torch.nn.Module, Any]] = {}

    def factory(family: str, **kwargs: Any) -> tuple[torch.nn.Module, Any]:
        key = f"{family}|{sorted(kwargs.items(), key=lambda item: item[0])!r}"
        if key not in cache:
            cache[key] = build_tiny_model(family, **kwargs)
        return cache[key]

    return factory
