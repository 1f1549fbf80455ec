"""Qwen3.5: Qwen3-VL's video layout (frames split by timestamp text, no deepstack) on a hybrid decoder."""

from __future__ import annotations

from framefusion.adapters.hybrid import HybridDecoderMixin
from framefusion.adapters.qwen2_vl import Qwen2VLAdapter


class Qwen3_5Adapter(HybridDecoderMixin, Qwen2VLAdapter):
    """Video tokens read as for Qwen2-VL; prune steps only after the full-attention layers."""

    name = "Qwen3.5"
    model_types = ("qwen3_5",)
    frames_in_own_spans = True
    threshold_source = "no published value: Qwen2-VL's (run framefusion calibrate for this model)"
