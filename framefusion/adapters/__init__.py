"""Model-family adapters: the only model-specific code. Adding a family means adding a file and a line below."""

from __future__ import annotations

from torch import nn

from framefusion.adapters.base import FamilyAdapter
from framefusion.adapters.internvl import InternVLAdapter
from framefusion.adapters.internvl_chat import InternVLChatAdapter
from framefusion.adapters.llava_next import LlavaNextAdapter
from framefusion.adapters.llava_next_video import LlavaNextVideoAdapter
from framefusion.adapters.llava_onevision import LlavaOneVisionAdapter
from framefusion.adapters.minicpm import MiniCPMV4_6Adapter, MiniCPMV4_7Adapter
from framefusion.adapters.minicpmv2_6 import MiniCPMV2_6Adapter
from framefusion.adapters.nvila import NVILAAdapter
from framefusion.adapters.qwen2_5_vl import Qwen2_5_VLAdapter
from framefusion.adapters.qwen2_vl import Qwen2VLAdapter
from framefusion.adapters.qwen3_5 import Qwen3_5Adapter
from framefusion.adapters.qwen3_vl import Qwen3VLAdapter
from framefusion.core.stack import DecoderStack

ADAPTERS: tuple[FamilyAdapter, ...] = (
    Qwen2VLAdapter(),
    Qwen2_5_VLAdapter(),
    Qwen3VLAdapter(),
    LlavaOneVisionAdapter(),
    LlavaNextVideoAdapter(),
    LlavaNextAdapter(),
    InternVLAdapter(),
    InternVLChatAdapter(),
    Qwen3_5Adapter(),
    MiniCPMV4_6Adapter(),
    MiniCPMV4_7Adapter(),
    MiniCPMV2_6Adapter(),
    NVILAAdapter(),
)


def decoder_stack(model: nn.Module) -> DecoderStack:
    """Depth and layer kinds of a supported model's decoder (which layers are linear attention)."""
    adapter = adapter_for(model)
    return DecoderStack(tuple(adapter.is_linear(layer) for layer in adapter.decoder_layers(model)))


class UnsupportedModelError(ValueError):
    """The model's architecture has no adapter."""


def supported_families() -> list[str]:
    """Names of the supported model families."""
    return [adapter.name for adapter in ADAPTERS]


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter for a model loaded with `from_pretrained`, or UnsupportedModelError listing the families."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedModelError(
        f"unsupported model type {model_type!r} ({type(model).__name__}); supported families: "
        + ", ".join(supported_families())
    )
