"""How LLaVA-NeXT arranges projected SigLIP features into LLM tokens: video pooling and newline tokens, and the
tiled ("anyres") image layout. Plain tensor functions of the settings; the token counts the processor needs come
from the same functions as the features."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from framefusion.models.llava_next.settings import MultimodalSettings


def pooled_side(side: int, settings: MultimodalSettings) -> int:
    """Side of a frame's feature grid after spatial pooling (27 -> 14 bilinear, 13 average or max, at stride 2)."""
    stride = settings.mm_spatial_pool_stride
    return math.ceil(side / stride) if settings.mm_spatial_pool_mode == "bilinear" else side // stride


def pool_frames(features: torch.Tensor, side: int, settings: MultimodalSettings) -> torch.Tensor:
    """[T, side * side, D] projected features -> [T, s, s, D] pooled, s = pooled_side(side)."""
    frames, _, dim = features.shape
    grid = features.view(frames, side, side, dim).permute(0, 3, 1, 2)  # [T, D, side, side]
    stride = settings.mm_spatial_pool_stride
    if settings.mm_spatial_pool_mode == "average":
        grid = nn.functional.avg_pool2d(grid, stride)
    elif settings.mm_spatial_pool_mode == "max":
        grid = nn.functional.max_pool2d(grid, stride)
    else:
        grid = nn.functional.interpolate(grid, size=[pooled_side(side, settings)] * 2, mode="bilinear")
    return grid.permute(0, 2, 3, 1)  # [T, s, s, D]


@dataclass(frozen=True)
class VideoTokens:
    """How one video's tokens are laid out: per frame `rows` x `cols` tokens (newline tokens included), then
    `trailing` tokens after the last frame (one_token's single newline)."""

    frames: int
    rows: int
    cols: int
    trailing: int = 0

    @property
    def per_frame(self) -> int:
        """Tokens each frame contributes."""
        return self.rows * self.cols

    @property
    def total(self) -> int:
        """All of the video's tokens."""
        return self.frames * self.per_frame + self.trailing


def video_tokens(frames: int, side: int, settings: MultimodalSettings) -> VideoTokens:
    """The token layout of a video of `frames` frames whose SigLIP grid is side x side."""
    s = pooled_side(side, settings)
    position = settings.mm_newline_position if settings.spatial else "no_token"
    if position == "grid":
        return VideoTokens(frames, s, s + 1)  # every row ends in a newline token
    if position == "frame":
        return VideoTokens(frames, 1, s * s + 1)  # one newline token after each frame
    if position == "one_token" and settings.unpad:
        return VideoTokens(frames, s, s, trailing=1)  # one newline token after the video
    return VideoTokens(frames, s, s)


def arrange_video(pooled: torch.Tensor, newline: torch.Tensor | None, settings: MultimodalSettings) -> torch.Tensor:
    """[T, s, s, D] pooled features -> [tokens, D] in the order LLaVA-NeXT feeds them (see video_tokens)."""
    frames, rows, cols, dim = pooled.shape
    position = settings.mm_newline_position if settings.spatial else "no_token"
    if position == "one_token" and not settings.unpad:
        position = "no_token"
    if position != "no_token" and newline is None:
        raise ValueError(f"mm_newline_position={position} needs the checkpoint's image_newline")
    if position == "grid":
        column = newline.to(pooled.dtype).expand(frames, rows, 1, dim)
        return torch.cat((pooled, column), dim=2).reshape(-1, dim)  # [T * s * (s + 1), D]
    flat = pooled.reshape(frames, rows * cols, dim)
    if position == "frame":
        return torch.cat((flat, newline.to(pooled.dtype).expand(frames, 1, dim)), dim=1).reshape(-1, dim)
    flat = flat.reshape(-1, dim)
    if position == "one_token":
        return torch.cat((flat, newline.to(pooled.dtype)[None]), dim=0)
    return flat


# ---- images -------------------------------------------------------------------------------------------------------

def best_resolution(size: tuple[int, int], candidates: list[tuple[int, int]]) -> tuple[int, int]:
    """The (width, height) among `candidates` that keeps the most of an image of `size` (width, height), then wastes
    the least (LLaVA-NeXT's rule for anyres tiling)."""
    width, height = size
    best, most, least_waste = candidates[0], -1, math.inf
    for cand_w, cand_h in candidates:
        scale = min(cand_w / width, cand_h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_w * cand_h - kept
        if kept > most or (kept == most and waste < least_waste):
            best, most, least_waste = (cand_w, cand_h), kept, waste
    return best


def pinpoints(settings: MultimodalSettings, tile: int) -> list[tuple[int, int]]:
    """image_grid_pinpoints as (width, height) pairs ("(1x1),...,(6x6)" ranges are in tiles)."""
    points = settings.image_grid_pinpoints
    if isinstance(points, str) and "x" in points:
        found = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", points)]
        (w0, h0), (w1, h1) = found[0], found[-1]
        return [(i * tile, j * tile) for i in range(w0, w1 + 1) for j in range(h0, h1 + 1)]
    if isinstance(points, str):
        points = ast.literal_eval(points)
    if not points:
        raise ValueError("image_aspect_ratio anyres needs image_grid_pinpoints in config.json")
    return [(int(w), int(h)) for w, h in points]


def unpadded_size(rows: int, cols: int, size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of a rows x cols feature grid once the padding the tiling added around an image of `size`
    (width, height) is cut off."""
    width, height = size
    if width / height > cols / rows:  # padding above and below
        new_rows = int(height * (cols / width))
        pad = (rows - new_rows) // 2
        return rows - 2 * pad, cols
    new_cols = int(width * (rows / height))
    pad = (cols - new_cols) // 2
    return rows, cols - 2 * pad


@dataclass(frozen=True)
class ImageTokens:
    """How one image's tiles become tokens."""

    tiles_high: int  # tile grid of the high-resolution view (0: a single tile, no base/tiles split)
    tiles_wide: int
    rows: int  # feature rows of the high-resolution view after unpadding (and anyres_max down-scaling)
    cols: int
    scaled: bool  # whether anyres_max down-scaled the view
    total: int


def image_tokens(size: tuple[int, int], tiles: int, side: int, tile: int, settings: MultimodalSettings) -> ImageTokens:
    """Token layout of an image of `size` (width, height) given as `tiles` tiles (the base view first) of
    side x side features each (`tile` pixels)."""
    per_tile = side * side
    if not settings.spatial:
        return ImageTokens(0, 0, 0, 0, False, tiles * per_tile)
    if tiles == 1:
        return ImageTokens(0, 0, side, side, False, per_tile + (1 if settings.unpad else 0))
    if settings.anyres:
        wide, high = (d // tile for d in best_resolution(size, pinpoints(settings, tile)))
    else:
        wide = high = 2
    if wide * high != tiles - 1:
        raise ValueError(f"an image of size {size} gives {tiles - 1} tiles but its tile grid is {wide}x{high}")
    rows, cols, scaled = high * side, wide * side, False
    base = 0 if "nobase" in settings.mm_patch_merge_type else per_tile
    if not settings.unpad:
        return ImageTokens(high, wide, rows, cols, False, base + rows * cols)
    rows, cols = unpadded_size(rows, cols, size)
    limit = settings.anyres_max
    if limit is not None:
        times = math.sqrt(rows * cols / (limit * side ** 2))
        if times > 1.1:
            rows, cols, scaled = int(rows // times), int(cols // times), True
    return ImageTokens(high, wide, rows, cols, scaled, base + rows * (cols + 1))


def arrange_image(features: torch.Tensor, size: tuple[int, int], side: int, tile: int, newline: torch.Tensor | None,
                  settings: MultimodalSettings) -> torch.Tensor:
    """[tiles, side * side, D] projected features of one image -> [tokens, D] (see image_tokens)."""
    tiles, _, dim = features.shape
    layout = image_tokens(size, tiles, side, tile, settings)
    if not settings.spatial:
        return features.reshape(-1, dim)
    if tiles == 1:
        single = features[0]
        return torch.cat((single, newline.to(single.dtype)[None]), dim=0) if settings.unpad else single
    base, view = features[0], features[1:].reshape(layout.tiles_high, layout.tiles_wide, side, side, dim)
    if settings.unpad:
        grid = view.permute(4, 0, 2, 1, 3).reshape(dim, layout.tiles_high * side, layout.tiles_wide * side)
        rows, cols = unpadded_size(grid.shape[1], grid.shape[2], size)
        top, left = (grid.shape[1] - rows) // 2, (grid.shape[2] - cols) // 2
        grid = grid[:, top:top + rows, left:left + cols]
        if layout.scaled:
            grid = nn.functional.interpolate(grid[None], [layout.rows, layout.cols], mode="bilinear")[0]
        column = newline.to(grid.dtype)[:, None, None].expand(dim, grid.shape[1], 1)
        tokens = torch.cat((grid, column), dim=-1).flatten(1, 2).transpose(0, 1)  # [rows * (cols + 1), D]
    else:
        tokens = view.permute(0, 2, 1, 3, 4).reshape(-1, dim)
    if "nobase" in settings.mm_patch_merge_type:
        return tokens
    return torch.cat((base, tokens), dim=0)
