"""Differences between the transformers versions this package supports, kept in one place.

transformers 5.24 renamed the cache argument and output field from `past_key_values` (and `cache_params`) to
`cache`; older 5.x releases only know the old names. Everything that passes or reads a cache goes through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from transformers.modeling_outputs import BaseModelOutputWithPast

OLD_CACHE_NAMES = ("past_key_values", "cache_params")
CACHE_NAME = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"


def cache_in(arguments: Mapping[str, Any]) -> Any:
    """The cache among a forward's keyword arguments, under whichever name the caller used (None if absent)."""
    for name in ("cache", *OLD_CACHE_NAMES):
        value = arguments.get(name)
        if value is not None:
            return value
    return None


def output_cache(output: Any) -> Any:
    """The cache a model output returns (None if it has none)."""
    return getattr(output, CACHE_NAME, None)


def cache_argument(cache: Any) -> dict[str, Any]:
    """Keyword arguments that pass `cache` to a model's forward under this transformers' name."""
    return {CACHE_NAME: cache}
