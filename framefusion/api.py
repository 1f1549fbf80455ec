"""Public entry points: apply FrameFusion to a model in place, remove it, read the last prefill's statistics."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from framefusion.adapters import adapter_for
from framefusion.core.config import FrameFusionConfig
from framefusion.core.engine import ReducerFactory, ReductionEngine
from framefusion.core.reduction import PrefillReduction
from framefusion.core.stats import ReductionStats

ENGINE_ATTRIBUTE = "_framefusion_engine"


def apply_framefusion(model: nn.Module, cost: float = 0.3, similarity_lower_bound: float = 0.6,
                      ratio_lower_bound: float = 0.1, importance_queries: int | None = None) -> nn.Module:
    """Add FrameFusion to a Hugging Face video LLM in place and return it (re-applying replaces the settings).

    importance_queries=None takes the family's default (4 for the Qwen-VL families, 1 for the others).
    """
    config = FrameFusionConfig(cost, similarity_lower_bound, ratio_lower_bound, importance_queries)
    config = config.with_family_default(adapter_for(model).importance_queries)

    def make_reducer(layout, stack, device):
        return PrefillReduction(layout, config, stack, device)

    description = f"FrameFusion(cost={cost}, similarity_lower_bound={similarity_lower_bound}, " \
                  f"ratio_lower_bound={ratio_lower_bound}, importance_queries={config.importance_queries})"
    return install_reducer(model, make_reducer, description)


def install_reducer(model: nn.Module, make_reducer: ReducerFactory, description: str,
                    undo: Callable[[], None] | None = None) -> nn.Module:
    """Install any token reducer (FrameFusion or a baseline) into a model, replacing one already there.

    undo: what else to undo with it (e.g. a method's hooks on the vision encoder).
    """
    adapter = adapter_for(model)
    remove_framefusion(model)
    engine = ReductionEngine(model, adapter, make_reducer, description)
    engine.install()
    if undo is not None:
        engine.add_undo(undo)
    model.__dict__[ENGINE_ATTRIBUTE] = engine
    return model


def remove_framefusion(model: nn.Module) -> nn.Module:
    """Restore the untouched dense model (a no-op if nothing was applied)."""
    engine = model.__dict__.pop(ENGINE_ATTRIBUTE, None)
    if engine is not None:
        engine.uninstall()
    return model


def last_stats(model: nn.Module) -> ReductionStats | None:
    """Statistics of the model's last reducing prefill (None if none ran or the prompt had no video)."""
    engine = model.__dict__.get(ENGINE_ATTRIBUTE)
    return engine.last_stats if engine is not None else None


def reduction_description(model: nn.Module) -> str | None:
    """What reduction is installed on the model, or None for the dense model."""
    engine = model.__dict__.get(ENGINE_ATTRIBUTE)
    return engine.description if engine is not None else None
