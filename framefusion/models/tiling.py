"""The dynamic-resolution tile grid that InternVL introduced and NVILA's `dynamic` / `dynamic_s2` reuse: which
columns x rows grid of square tiles an image is cut into."""

from __future__ import annotations


def tile_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(columns, rows) grids with min_tiles <= columns * rows <= max_tiles, fewest tiles first; grids with equal
    counts keep the order of the set the published code sorts (tuples of ints hash the same in every run)."""
    grids = {(c, r) for n in range(min_tiles, max_tiles + 1) for c in range(1, n + 1) for r in range(1, n + 1)
             if min_tiles <= c * r <= max_tiles}
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def closest_grid(width: int, height: int, grids: list[tuple[int, int]], tile: int) -> tuple[int, int]:
    """The (columns, rows) grid whose aspect ratio is closest to the image's; on a tie, the later grid wins when
    the image has more than half the pixels of that grid's tiles."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in grids:
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * columns * rows:
            best = (columns, rows)
    return best
