"""NVILA's image tiling: `dynamic` (InternVL-style tiles plus a thumbnail) and `dynamic_s2` (multi-scale tiles whose
features are merged across scales), and the chessboard split / merge of feature maps that dynamic S2 uses.

Tiles are cut from PIL images resized with PIL's default filter (bicubic), left to right, top to bottom, as the
published preprocessing does.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from framefusion.models.tiling import closest_grid, tile_grids


def cut_tiles(image: Image.Image, columns: int, rows: int, tile: int) -> list[Image.Image]:
    """The image resized to columns x rows tiles of `tile` px, cut row by row."""
    resized = image.resize((tile * columns, tile * rows))
    return [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
            for r in range(rows) for c in range(columns)]


def dynamic_tiles(image: Image.Image, tile: int, min_tiles: int, max_tiles: int) -> list[Image.Image]:
    """`dynamic`: tiles on the closest-aspect grid, plus a thumbnail of the whole image when there are several."""
    columns, rows = closest_grid(*image.size, tile_grids(min_tiles, max_tiles), tile)
    tiles = cut_tiles(image, columns, rows, tile)
    if len(tiles) > 1:
        tiles.append(image.resize((tile, tile)))
    return tiles


def dynamic_s2_tiles(image: Image.Image, scales: tuple[int, ...], max_tiles: int
                     ) -> tuple[list[Image.Image], tuple[int, int]]:
    """`dynamic_s2`: square tilings at every scale but the last, then the last scale on the closest-aspect grid
    (at least as many tiles as its square tiling). Returns the tiles and the last grid as (rows, columns)."""
    tile = scales[0]
    tiles: list[Image.Image] = []
    for scale in scales[:-1]:
        side = scale // tile
        tiles += cut_tiles(image, side, side, tile)
    least = (scales[-1] // tile) ** 2
    columns, rows = closest_grid(*image.size, tile_grids(least, max_tiles), tile)
    tiles += cut_tiles(image, columns, rows, tile)
    return tiles, (rows, columns)


def merge_chessboard(tiles: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """[rows * columns * b, n*n, C] (or [.., C, n, n]) tiles, row by row -> [b, C, rows * n, columns * n]."""
    if tiles.dim() == 3:
        count, tokens, channels = tiles.shape
        side = round(tokens ** 0.5)
        tiles = tiles.transpose(1, 2).reshape(count, channels, side, side)
    count, channels, height, width = tiles.shape
    b = count // (rows * columns)
    grid = tiles.reshape(rows, columns, b, channels, height, width).permute(2, 3, 0, 4, 1, 5)
    return grid.reshape(b, channels, rows * height, columns * width)


def split_chessboard(maps: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """[b, C, H, W] -> [rows * columns * b, C, H / rows, W / columns], tiles row by row (inverse of merge)."""
    b, channels, height, width = maps.shape
    h, w = height // rows, width // columns
    grid = maps.reshape(b, channels, rows, h, columns, w).permute(2, 4, 0, 1, 3, 5)
    return grid.reshape(rows * columns * b, channels, h, w)


def merge_scales(features: torch.Tensor, scales: tuple[int, ...], grid: tuple[int, int] | None,
                 output_scale: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image's tile features [tiles, n*n, C] -> its multi-scale map [1, C * len(scales), H, W] and the grid
    (rows, columns) it is cut into for the projector.

    grid None (a video frame or a single-tile image): the one tile's map repeated for every scale. Otherwise each
    scale's tiles are merged into one map, every map is resized (area) to the size of scale `output_scale`, and
    the maps are concatenated on channels.
    """
    if grid is None:
        return merge_chessboard(features, 1, 1).repeat(1, len(scales), 1, 1), (1, 1)
    maps, start = [], 0
    for scale in scales[:-1]:
        side = scale // scales[0]
        maps.append(merge_chessboard(features[start:start + side * side], side, side))
        start += side * side
    maps.append(merge_chessboard(features[start:start + grid[0] * grid[1]], *grid))
    size = maps[output_scale].shape[-2:]
    merged = torch.cat([nn.functional.interpolate(m.float(), size=size, mode="area").to(m.dtype) for m in maps], 1)
    if output_scale in (-1, len(scales) - 1):
        return merged, grid
    side = scales[output_scale] // scales[0]
    return merged, (side, side)
