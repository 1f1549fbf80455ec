"""Load a supported video LLM and its processor by hub id, local directory, or "demo", on a chosen device."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framefusion.adapters import ADAPTERS, UnsupportedModelError, adapter_for, supported_families
from framefusion.models import ModelArgError, OriginalFormat, find_format, load_original

DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ATTENTION = ("sdpa", "eager", "flash_attention_2")
DEMO = "demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"


class ModelLoadError(RuntimeError):
    """A model that cannot be found or loaded, with a one-line message saying what to do."""


@dataclass
class LoadedModel:
    """A model ready for inference, with the processor and the settings it was loaded with."""

    model: nn.Module
    processor: Any
    name: str  # what the user asked for: a hub id, a directory, or "demo"
    device: torch.device
    dtype: torch.dtype
    is_demo: bool = False
    random_weights: bool = False  # built from its config with random weights (real shape, for timing)
    width_scale: float = 1.0  # widths relative to the config's (random-weight models only)

    @classmethod
    def of(cls, model: nn.Module, processor: Any, name: str = "model") -> "LoadedModel":
        """Wrap a model already in memory (its device and dtype read from its parameters)."""
        parameter = next(model.parameters())
        return cls(model, processor, name, parameter.device, parameter.dtype)

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer (the processor itself if it is one)."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def family(self) -> str:
        """The supported family the model belongs to (e.g. "Qwen2-VL")."""
        return adapter_for(self.model).name

    def describe(self) -> dict[str, Any]:
        """What was built: name, family, weights, depth, widths, dtype, device (the `model` object of --json)."""
        text = adapter_for(self.model).text_model(self.model).config
        vision = getattr(self.model.config, "vision_config", None)
        layer_types = getattr(text, "layer_types", None) or []
        return {
            "name": self.name,
            "family": self.family,
            "weights": "random" if self.random_weights else "loaded",
            "width_scale": self.width_scale,
            "num_layers": text.num_hidden_layers,
            "linear_attention_layers": sum(kind == "linear_attention" for kind in layer_types),
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "attention_heads": text.num_attention_heads,
            "kv_heads": text.num_key_value_heads,
            "head_dim": getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
            "vision_width": getattr(vision, "embed_dim", None) or getattr(vision, "hidden_size", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; an explicit device must be available."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if device == "cuda" and not cuda:
        raise ModelLoadError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if device == "mps" and not mps:
        raise ModelLoadError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS, fp32 on CPU."""
    if dtype != "auto":
        try:
            return DTYPES[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def demo_model_directory() -> Path:
    """Where the built-in demo model lives, or ModelLoadError if this installation has none."""
    try:
        from framefusion.demo import demo_model_path
    except ImportError:
        raise ModelLoadError(
            "the built-in demo model is not available in this installation; pass --model with a hub id "
            "(e.g. Qwen/Qwen2-VL-7B-Instruct) or a local model directory"
        ) from None
    try:
        return Path(demo_model_path())
    except (FileNotFoundError, OSError, RuntimeError) as error:
        raise ModelLoadError(f"the built-in demo model cannot be used: {error}") from None


def load_model(name_or_path: str = DEMO, *, device: str = "auto", dtype: str = "auto",
               attn: str = "sdpa", random_weights: bool = False, width_scale: float | None = None,
               model_args: dict[str, str] | None = None) -> LoadedModel:
    """Load a supported video LLM and its processor (hub id, local directory, or "demo") for inference.

    device="auto" picks cuda, then mps, then cpu; for the built-in demo model it picks the cpu (a 1.3 M-parameter
    model gains nothing from a GPU, and it was trained and measured in fp32). random_weights=True builds the
    model from its config with random weights instead (a short name such as "qwen2-vl-7b" from
    framefusion.pipeline.random_weights, a model directory, or a hub id whose config is cached), at `width_scale`
    (default: full size on a GPU that fits it, reduced on a CPU). Checkpoints in an original, non-transformers
    format (LLaVA-NeXT, InternVL2.5, MiniCPM-V 2.6, NVILA: framefusion.models) are built natively;
    model_args override the config keys such a format allows (--model-arg KEY=VALUE).
    """
    if attn not in ATTENTION:
        raise ValueError(f"unknown attention implementation {attn!r}; choose from {', '.join(ATTENTION)}")
    torch_device = resolve_device("cpu" if device == "auto" and name_or_path == DEMO else device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if random_weights:
        return _random_model(name_or_path, torch_device, torch_dtype, attn, width_scale)
    if width_scale is not None:
        raise ModelLoadError("--width-scale applies to --random-weights models only")
    from framefusion.pipeline.random_weights import REFERENCES

    if name_or_path in REFERENCES:
        raise ModelLoadError(f"{name_or_path!r} is a reference shape without weights: add --random-weights, or pass "
                             f"the hub id {REFERENCES[name_or_path][0]} to load the real weights")
    if attn == "flash_attention_2" and (torch_device.type != "cuda" or importlib.util.find_spec("flash_attn") is None):
        raise ModelLoadError("--attn flash_attention_2 needs a CUDA GPU and the flash-attn package; use --attn sdpa")
    is_demo = name_or_path == DEMO
    source, local = _locate(name_or_path)
    config, folder = _read_config(source, local, name_or_path)
    original = find_format(config)
    if original is not None:
        model, processor = _load_original(original, source, local, folder, name_or_path, torch_dtype, attn,
                                          model_args)
        return LoadedModel(model.to(torch_device).eval(), processor, name_or_path, torch_device, torch_dtype)
    if model_args:
        raise ModelArgError(f"model arguments ({', '.join(sorted(model_args))}; --model-arg, lmms-eval model_args) "
                            "apply to checkpoints in an original format (LLaVA-NeXT, InternVL2.5, MiniCPM-V 2.6, "
                            f"NVILA); {name_or_path} is a transformers checkpoint", sorted(model_args))
    _check_supported(config.get("model_type"), name_or_path)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    options: dict[str, Any] = {"dtype": torch_dtype, "attn_implementation": attn}
    if torch_device.type == "cuda":
        options["device_map"] = str(torch_device)  # load shards straight onto the GPU
    try:
        model = _from_pretrained(AutoModelForImageTextToText, source, local, name_or_path, **options)
        processor = _from_pretrained(AutoProcessor, source, local, name_or_path)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {_first_line(error)}") from error
    if torch_device.type != "cuda":
        model = model.to(torch_device)
    return LoadedModel(model.eval(), processor, name_or_path, torch_device, torch_dtype, is_demo)


def _random_model(name: str, device: torch.device, dtype: torch.dtype, attn: str,
                  width_scale: float | None) -> LoadedModel:
    """A real-shaped model with random weights (framefusion.pipeline.random_weights)."""
    from framefusion.pipeline.random_weights import RandomModelError, build_random_model

    if name == DEMO:
        raise ModelLoadError("--random-weights needs a model shape: a short name such as qwen2-vl-7b, a model "
                             "directory, or a cached hub id (the demo model has trained weights of its own)")
    try:
        model, processor, scale = build_random_model(name, device=device, dtype=dtype, attn=attn,
                                                     width_scale=width_scale)
    except RandomModelError as error:
        raise ModelLoadError(str(error)) from None
    return LoadedModel(model, processor, name, device, dtype, random_weights=True, width_scale=scale)


def _locate(name_or_path: str) -> tuple[str, bool]:
    """(where to load from, whether it is local): the demo, an existing directory, or a hub id."""
    if name_or_path == DEMO:
        return str(demo_model_directory()), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"--model expects a hub id or a model directory, got a file: {path}")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"not a model directory (no config.json): {path}")
        return str(path), True
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith((".", "~")):
        raise ModelLoadError(f"model directory not found: {name_or_path}")
    return name_or_path, False


def _from_pretrained(auto_class: Any, source: str, local: bool, name: str, **options: Any) -> Any:
    """auto_class.from_pretrained: local files first; a hub id falls back to downloading when online."""
    try:
        return auto_class.from_pretrained(source, local_files_only=True, **options)
    except OSError:
        if local or _offline():
            raise
    try:
        return auto_class.from_pretrained(source, **options)
    except OSError:
        raise ModelLoadError(
            _fetch_hint(name, "could not be loaded from the local cache or the Hugging Face Hub")) from None


def _read_config(source: str, local: bool, name: str) -> tuple[dict[str, Any], Path]:
    """(config.json as a dict, the folder holding it): from the directory, the local hub cache, or the Hub."""
    if local:
        path = Path(source) / "config.json"
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot read {path}: {_first_line(error)}") from None
        if not isinstance(config, dict):
            raise ModelLoadError(f"cannot read {path}: not a JSON object")
        return config, Path(source)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(source, "config.json", local_files_only=True)
    except (OSError, ValueError, EntryNotFoundError):
        if _offline():
            raise ModelLoadError(
                _fetch_hint(name, "is not in the local Hugging Face cache and the Hub is offline")) from None
        if not _hub_reachable():
            raise ModelLoadError(_fetch_hint(name, "is not in the local Hugging Face cache and the Hub cannot be "
                                                   "reached")) from None
        try:
            path = hf_hub_download(source, "config.json")
        except Exception:  # not found, gated, no connection, timeouts: all mean "fetch it yourself"
            raise ModelLoadError(
                _fetch_hint(name, "could not be found locally or fetched from the Hugging Face Hub")
            ) from None
    return _read_config(str(Path(path).parent), True, name)


def _load_original(original: OriginalFormat, source: str, local: bool, folder: Path, name: str,
                   dtype: torch.dtype, attn: str, model_args: dict[str, str] | None) -> tuple[nn.Module, Any]:
    """A checkpoint in an original format: the whole repository snapshot (weights, sub-folders), built natively."""
    if not local:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(source, local_files_only=True))
        except (OSError, ValueError):
            if _offline() or not _hub_reachable():
                raise ModelLoadError(_fetch_hint(name, "is not wholly in the local Hugging Face cache")) from None
            folder = Path(snapshot_download(source))
    try:
        return load_original(original, folder, dtype=dtype, attn_implementation=attn, model_args=model_args)
    except ModelArgError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"cannot load {name!r} ({original.name} format): {_first_line(error)}") from error


def _check_supported(model_type: str | None, name: str) -> None:
    """UnsupportedModelError unless an adapter handles the model_type."""
    if not any(model_type in adapter.model_types for adapter in ADAPTERS):
        raise UnsupportedModelError(
            f"{name} is a {model_type!r} model, which framefusion does not support; supported families: "
            + ", ".join(supported_families())
        )


def _offline() -> bool:
    """Whether huggingface_hub was told not to use the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "on", "yes", "true"} for flag in flags)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens (assumed yes behind a proxy), to fail fast without a network."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                             "all_proxy")):
        return True
    from huggingface_hub import constants

    endpoint = urllib.parse.urlparse(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _fetch_hint(name: str, problem: str) -> str:
    return (f"model {name!r} {problem}: run `hf download {name}` on a machine with internet access "
            "(then copy the cache or the folder here), or pass a local model directory with --model")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
