"""Qwen2.5-VL: the same token layout as Qwen2-VL."""

from __future__ import annotations

from framefusion.adapters.qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL reads video tokens exactly like Qwen2-VL."""

    name = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    threshold_source = "no published value: Qwen2-VL's (run framefusion calibrate for this model)"
