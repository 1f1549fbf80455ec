"""Checkpoints in their original, non-transformers formats, built natively from transformers' own modules.

The seeds' remote-code and LLaVA-NeXT checkpoints (LLaVA-Video, InternVL2.5, MiniCPM-V 2.6, NVILA) do not load
through transformers' Auto classes. Each such format is one module of this package, registered below by the
facts of its config.json that identify it. A format module provides:

- ``load(folder, *, dtype, attn_implementation, model_args) -> (model, processor)``: the model with the
  checkpoint's weights read under their original names, and a processor with the interface
  framefusion.video.prompting uses (``apply_chat_template``, ``__call__(text=, videos=, ...)``, ``.tokenizer``);
- ``MODEL_ARGS``: the config keys ``--model-arg KEY=VALUE`` may override, with a one-line description each;
- for random-weight models of the format's real shapes (framefusion.pipeline.random_weights; `folder` holds the
  shipped or cached config.json and processor settings): ``random_config(folder, tokenizer) -> config`` (the
  native config, its placeholder ids from `tokenizer`), ``random_model(folder, config, tokenizer, *, dtype,
  attn_implementation, seed) -> (model, processor)`` and ``empty_model(config) -> model`` (built under
  ``torch.device("meta")`` to count parameters).

Nothing here imports a format module until a checkpoint of that format is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class OriginalFormat:
    """One original checkpoint format: how to recognise its config.json and which module loads it."""

    name: str  # short name, shown in messages
    module: str  # the module under framefusion.models that loads it
    architectures: tuple[str, ...] = ()  # config.json "architectures" entries that identify the format
    model_types: tuple[str, ...] = ()  # or config.json "model_type" values that do
    native_model_types: tuple[str, ...] = ()  # model_type of the native model's config (what the adapter reads)
    tiny_tokenizer: str = "qwen2_vl"  # the framefusion.tiny tokenizer family random-weight models get
    facts: tuple[tuple[str, Any], ...] = ()  # and (key, value) pairs config.json must also hold, e.g. a version

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether a checkpoint's top-level config.json is in this format."""
        names = set(config.get("architectures") or ())
        named = bool(names & set(self.architectures)) or config.get("model_type") in self.model_types
        return named and all(key in config and config[key] == value for key, value in self.facts)

    def implementation(self) -> ModuleType:
        """The format's module (imported on first use)."""
        return importlib.import_module(f"framefusion.models.{self.module}")


FORMATS: tuple[OriginalFormat, ...] = (
    # config.json says model_type "llava" (transformers' own LLaVA type): architectures decide first
    OriginalFormat("LLaVA-NeXT (LlavaQwen)", "llava_next", architectures=("LlavaQwenForCausalLM",),
                   native_model_types=("llava_qwen",)),
    OriginalFormat("InternVL2.5", "internvl_chat", architectures=("InternVLChatModel",), model_types=("internvl_chat",),
                   native_model_types=("internvl_chat",), tiny_tokenizer="internvl_chat"),
    # MiniCPM-V 2.6 only: 2.0 / 2.5 / 4.0 / 4.5 also say "MiniCPMV" (other LLMs and vision towers), and the
    # transformers-native 4.6 / 4.7 say "MiniCPMV4_6ForConditionalGeneration" / model_type "minicpmv4_6"
    OriginalFormat("MiniCPM-V 2.6", "minicpmv", architectures=("MiniCPMV",), facts=(("version", 2.6),),
                   native_model_types=("minicpmv2_6",), tiny_tokenizer="minicpmv2_6"),
    OriginalFormat("NVILA", "nvila", architectures=("LlavaLlamaModel",), model_types=("llava_llama",),
                   native_model_types=("llava_llama",), tiny_tokenizer="nvila"),
)


class ModelArgError(ValueError):
    """Model arguments (--model-arg KEY=VALUE) the checkpoint does not take, or a value it cannot use."""

    def __init__(self, message: str, unknown: list[str] | None = None, known: list[str] | None = None):
        super().__init__(message)
        self.unknown = list(unknown or [])  # the keys it does not take
        self.known = list(known or [])  # the keys it takes


def find_format(config: Mapping[str, Any]) -> OriginalFormat | None:
    """The original format a config.json describes, or None for a transformers-native checkpoint."""
    return next((fmt for fmt in FORMATS if fmt.matches(config)), None)


def load_original(fmt: OriginalFormat, folder: str | Path, *, dtype: Any, attn_implementation: str = "sdpa",
                  model_args: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """(model, processor) of a checkpoint folder in `fmt`; model_args override config keys the format allows."""
    module = fmt.implementation()
    allowed = getattr(module, "MODEL_ARGS", {})
    unknown = sorted(set(model_args or {}) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ModelArgError(f"{fmt.name} checkpoints take no model argument {', '.join(unknown)}; known: {known}",
                            unknown, sorted(allowed))
    return module.load(Path(folder), dtype=dtype, attn_implementation=attn_implementation,
                       model_args=dict(model_args or {}))


def parse_model_args(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """KEY=VALUE strings (the CLI's repeated --model-arg) as a mapping; ModelArgError on a malformed one."""
    parsed: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ModelArgError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed
