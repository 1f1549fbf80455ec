"""The built-in demo model: a small Qwen2-VL trained here on synthetic video QA, shipped as package data.

Load it by the name `demo` (the CLI's default --model) or with `load_demo()`. It answers questions about
coloured needles in a video (colour, shape, position, direction, order); `python scripts/train_demo.py`
(in the source repository) reproduces it from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_NAME = "demo"
DEMO_NUM_FRAMES = 16  # frames sampled per video by default, the frame count the demo was trained at
DEMO_IMAGE_SIZE = 48  # frames are resized to about 48 x 48 pixels (the processor caps pixels per frame)
DEMO_MAX_NEW_TOKENS = 8  # every answer is one word
# the synthetic clips the demo was trained and is measured on (framefusion.synthetic.write_dataset)
DEMO_SOURCE_FRAMES = 32  # frames per clip
DEMO_SOURCE_SIZE = 112  # side in pixels (the processor brings it down to DEMO_IMAGE_SIZE)
DEMO_SOURCE_FPS = 8.0


class DemoModelMissingError(FileNotFoundError):
    """The packaged demo model files are not installed."""


def demo_model_path() -> Path:
    """The folder holding the packaged demo model (config, weights, tokenizer, processor configs)."""
    path = Path(__file__).resolve().parent.parent / "demo_model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DemoModelMissingError(
            f"the demo model is missing from {path}; reinstall framefusion, or rebuild it with "
            f"`python scripts/train_demo.py --out {path}` from the source repository"
        )
    return path


def load_demo(dtype: Any = None) -> tuple[Any, Any]:
    """The demo model (eval mode, float32 unless `dtype` says otherwise) and its processor, read offline."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = demo_model_path()
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype or torch.float32, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    return model.eval(), processor
