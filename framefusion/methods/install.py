"""Installing a method's reducer on a model and removing it: the one place a model is changed and restored.

Every patch (the engine's, a method's probes, the position rule) goes on the model's PatchStack
(core/patches.py). Installing first empties the stack, so a method applied over another behaves exactly as on a
fresh model; removing empties it, so the model is the stock one again.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from framefusion.adapters import UnsupportedModelError, adapter_for
from framefusion.core.contract import ReducerFactory
from framefusion.core.engine import ReductionEngine
from framefusion.core.patches import PatchStack, clear_patches, patches_of
from framefusion.core.stats import ReductionStats

ENGINE_ATTRIBUTE = "_framefusion_engine"

# build(patches) -> the reducer factory; it may patch the model first (e.g. a vision-encoder saliency probe)
ReducerBuilder = Callable[[PatchStack], ReducerFactory]


def install_method(model: nn.Module, description: str, build: ReducerBuilder | None,
                   method: str = "custom") -> nn.Module:
    """Install a reducer on the model in place, replacing whatever framefusion installed before; returns it.

    Every method, dense (build=None: no reducer) included, runs on the published model's positions
    (adapter.install_positions). `build` runs on the emptied patch stack and returns the reducer factory; anything
    it patches is removed with the method. `method` names it for the adapters (e.g. MiniCPM-V 2.6 reads frames as
    the authors' unit under "framefusion"). If installing fails, the model is left stock.
    """
    adapter = adapter_for(model)
    remove_reduction(model)
    patches = patches_of(model)
    try:
        adapter.install_positions(model, patches)
        if build is not None:
            engine = ReductionEngine(model, adapter, build(patches), description, method)
            engine.install(patches)
            model.__dict__[ENGINE_ATTRIBUTE] = engine
    except BaseException:
        remove_reduction(model)
        raise
    return model


def install_dense(model: nn.Module) -> nn.Module:
    """The unreduced model as published: no reducer, the published positions (what `dense` runs); a model of no
    supported family is left as it is."""
    try:
        adapter_for(model)
    except UnsupportedModelError:
        return remove_reduction(model)
    return install_method(model, "dense", None)


def install_reducer(model: nn.Module, make_reducer: ReducerFactory, description: str,
                    method: str = "custom") -> nn.Module:
    """Install a reducer factory that patches nothing else (see install_method)."""
    return install_method(model, description, lambda _patches: make_reducer, method)


def remove_reduction(model: nn.Module) -> nn.Module:
    """Undo everything framefusion put on the model (a no-op on a stock model); returns it."""
    clear_patches(model)
    model.__dict__.pop(ENGINE_ATTRIBUTE, None)
    return model


def last_stats(model: nn.Module) -> ReductionStats | None:
    """Statistics of the model's last reducing prefill (None if none ran or the prompt had no video)."""
    engine = model.__dict__.get(ENGINE_ATTRIBUTE)
    return engine.last_stats if engine is not None else None


def installed_engine(model: nn.Module) -> ReductionEngine | None:
    """The engine of the method installed on the model (None for dense or a stock model)."""
    return model.__dict__.get(ENGINE_ATTRIBUTE)


def reduction_description(model: nn.Module) -> str | None:
    """What reduction is installed on the model, or None for the dense model."""
    engine = model.__dict__.get(ENGINE_ATTRIBUTE)
    return engine.description if engine is not None else None
