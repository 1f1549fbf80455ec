"""MiniCPM-V 2.6's image slicing and pixel preprocessing, as its image processor does them.

An image whose area exceeds scale_resolution**2 is cut into a grid of up to `max_slice_nums` slices (the grid whose
aspect ratio is closest in log scale to the image's, among 1 x n .. n x 1 for n around area / scale**2), and is
also kept whole as a thumbnail resized to about scale**2 pixels. A smaller image is not sliced: it is resized to
about scale**2 pixels (upscaled if needed). Every size is rounded to whole patches. A 448 x 448 video frame at
scale 448 is therefore one slice of 32 x 32 patches. Pixels become (x / 255 - mean) / std per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

Size = tuple[int, int]  # (width, height), PIL's order
Grid = tuple[int, int]  # (columns, rows)


@dataclass(frozen=True)
class SliceSettings:
    """The image processor's settings (preprocessor_config.json)."""

    scale_resolution: int = 448
    patch_size: int = 14
    max_slice_nums: int = 9
    slice_mode: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def round_to_multiple(length: float, step: float) -> int:
    """`length` rounded (half to even) to a multiple of `step`, at least `step`."""
    return max(round(length / step) * step, step)


def fit_size(size: tuple[float, float], scale: int, patch: int, allow_upscale: bool = False) -> Size:
    """A size of about scale**2 pixels with the aspect ratio of `size` (only shrinking unless allow_upscale),
    rounded to whole patches."""
    width, height = size
    if width * height > scale * scale or allow_upscale:
        ratio = width / height
        height = int(scale / math.sqrt(ratio))
        width = int(height * ratio)
    return round_to_multiple(width, patch), round_to_multiple(height, patch)


def slice_grid(size: Size, scale: int, max_slices: int) -> Grid | None:
    """The (columns, rows) grid an image of `size` is cut into, or None when it is not sliced."""
    width, height = size
    wanted = min(math.ceil(width * height / (scale * scale)), max_slices)
    if wanted <= 1:
        return None
    counts = [n for n in (wanted - 1, wanted, wanted + 1) if n != 1 and n <= max_slices]
    grids = [(cols, n // cols) for n in counts for cols in range(1, n + 1) if n % cols == 0]
    log_ratio = math.log(width / height)
    return min(grids, key=lambda grid: abs(log_ratio - math.log(grid[0] / grid[1])))  # first of equals wins


def grid_size(size: Size, grid: Grid, scale: int, patch: int) -> Size:
    """The size the whole image is resized to before it is cut into `grid` slices of whole patches each."""
    width, height = size
    cols, rows = grid
    cell = fit_size((round_to_multiple(width, cols) / cols, round_to_multiple(height, rows) / rows), scale, patch,
                    allow_upscale=True)
    return cell[0] * cols, cell[1] * rows


def slice_image(image: Image.Image, settings: SliceSettings, max_slices: int) -> tuple[list[Image.Image], Grid | None]:
    """The image's slices in token order (the thumbnail, then the grid's cells row by row) and the grid."""
    scale, patch = settings.scale_resolution, settings.patch_size
    if not settings.slice_mode:
        return [image], None
    grid = slice_grid(image.size, scale, max_slices)
    if grid is None:
        return [image.resize(fit_size(image.size, scale, patch, allow_upscale=True), Image.Resampling.BICUBIC)], None
    thumbnail = image.resize(fit_size(image.size, scale, patch), Image.Resampling.BICUBIC)
    refined = image.resize(grid_size(image.size, grid, scale, patch), Image.Resampling.BICUBIC)
    cell_w, cell_h = refined.size[0] // grid[0], refined.size[1] // grid[1]
    cells = [refined.crop((col * cell_w, row * cell_h, (col + 1) * cell_w, (row + 1) * cell_h))
             for row in range(grid[1]) for col in range(grid[0])]
    return [thumbnail, *cells], grid


def normalize(image: Image.Image, settings: SliceSettings) -> torch.Tensor:
    """[3, H, W] float32: (pixel / 255 - mean) / std, computed in float32 as the original does."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)  # [H, W, 3]
    mean, std = np.asarray(settings.mean, dtype=np.float32), np.asarray(settings.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)))


def pad_slices(slices: list[torch.Tensor], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, h_i, w_i] slices -> (pixels [S, 3, H_max, W_max], each at the top left, zero-padded; tgt_sizes [S, 2] long:
    patch rows and columns)."""
    if not slices:
        return torch.zeros(0, 3, patch, patch), torch.zeros(0, 2, dtype=torch.long)
    height = max(s.shape[1] for s in slices)
    width = max(s.shape[2] for s in slices)
    out = torch.zeros(len(slices), 3, height, width)
    for i, pixels in enumerate(slices):  # one copy per slice (a frame or a cell), not per token
        out[i, :, : pixels.shape[1], : pixels.shape[2]] = pixels
    sizes = torch.tensor([[s.shape[1] // patch, s.shape[2] // patch] for s in slices], dtype=torch.long)
    return out, sizes
