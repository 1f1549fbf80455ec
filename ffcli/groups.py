"""Option groups the commands share, each defined once: a command takes a group as one parameter and the
command line shows its options (`with_groups`)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from ffcli import options as o


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How to load the model (besides its name, whose default and help differ between commands)."""

    random_weights: o.RandomWeights = False
    width_scale: o.WidthScale = None
    model_arg: o.ModelArgs = None
    device: o.Device = "auto"
    dtype: o.Dtype = "auto"
    attn: o.Attn = "sdpa"


@dataclasses.dataclass(frozen=True)
class ReductionOptions:
    """The method parameters (each method takes those it knows)."""

    similarity: o.Similarity = None
    ratio_lower_bound: o.RatioLowerBound = o.DEFAULT_RATIO_LOWER_BOUND
    importance_queries: o.ImportanceQueries = None
    saliency: o.Saliency = "attention"
    budget_rule: o.BudgetRule = "matched"

    def params(self) -> dict[str, Any]:
        """The parameters by the library's names (framefusion.apply_method); an unset similarity is left out, so
        the model's stored calibration or its family's default applies."""
        params = {"ratio_lower_bound": self.ratio_lower_bound, "importance_queries": self.importance_queries,
                  "saliency": self.saliency, "budget_rule": self.budget_rule}
        if self.similarity is not None:
            params["similarity_lower_bound"] = self.similarity
        return params


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """How frames are sampled from a video file."""

    frames: o.Frames = None
    fps: o.Fps = None
    decoder: o.Decoder = "av"


GROUPS = (ModelOptions, ReductionOptions, SamplingOptions)


def with_groups(command: Callable) -> Callable:
    """The command with each parameter annotated by a group replaced by the group's options on the command line;
    the command is called with the group object built from them."""
    hints = get_type_hints(command, include_extras=True)
    parameters, groups = [], {}
    for parameter in inspect.signature(command).parameters.values():
        group = hints.get(parameter.name)
        if group in GROUPS:
            field_hints = get_type_hints(group, include_extras=True)
            fields = dataclasses.fields(group)
            parameters += [inspect.Parameter(f.name, parameter.kind, default=f.default, annotation=field_hints[f.name])
                           for f in fields]
            groups[parameter.name] = (group, [f.name for f in fields])
        else:
            parameters.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)))

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        for name, (group, fields) in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in fields})
        return command(**kwargs)

    run.__signature__ = inspect.Signature(parameters)
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    del run.__wrapped__  # Typer must read the expanded signature, not the command's
    return run
