"""What every original-format processor shares: images in as RGB PIL images, generated ids out as text."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


class DecodesWithTokenizer:
    """decode / batch_decode as a transformers processor offers them, delegated to `self.tokenizer`."""

    tokenizer: Any

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's decode."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's batch_decode."""
        return self.tokenizer.batch_decode(*args, **kwargs)


def as_pil(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image or an [H, W, C] / [C, H, W] (C = 1 or 3) array or tensor of integer
    pixel values (0-255). Floating-point pixels are refused: 0-1 and 0-255 scales cannot be told apart."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"images and frames must hold integer RGB values 0-255, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).convert("RGB")
