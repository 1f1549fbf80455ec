"""framefusion.models.processing: what the original-format processors share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from framefusion.models.processing import DecodesWithTokenizer, as_pil


def test_as_pil_reads_every_layout_as_the_same_rgb_image():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    expected = Image.fromarray(hwc)
    for image in (hwc, hwc.transpose(2, 0, 1), torch.from_numpy(hwc), torch.from_numpy(hwc).permute(2, 0, 1),
                  hwc.astype(np.int64), expected, expected.convert("RGBA")):
        pil = as_pil(image)
        assert pil.mode == "RGB" and pil.size == (7, 5)
        assert np.array_equal(np.asarray(pil), hwc)


def test_as_pil_takes_one_channel_as_grey():
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    pil = as_pil(grey)
    assert pil.size == (4, 3)
    assert np.array_equal(np.asarray(pil), np.repeat(grey[0][..., None], 3, axis=2))


def test_as_pil_refuses_floating_point_pixels():
    with pytest.raises(ValueError, match="integer RGB values 0-255, got float32"):
        as_pil(np.zeros((4, 4, 3), dtype=np.float32))


def test_decoding_goes_through_the_tokenizer():
    class Tokenizer:
        def decode(self, ids, skip_special_tokens=False):
            return f"{ids}:{skip_special_tokens}"

        def batch_decode(self, batch, **kwargs):
            return [self.decode(ids, **kwargs) for ids in batch]

    processor = DecodesWithTokenizer()
    processor.tokenizer = Tokenizer()
    assert processor.decode([1, 2], skip_special_tokens=True) == "[1, 2]:True"
    assert processor.batch_decode([[1], [2]]) == ["[1]:False", "[2]:False"]
