"""Figures of one reducing prefill: merged / pruned patches on the sampled frames, tokens per layer, a contact sheet."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from framefusion.core.stats import KEPT, MERGED, PRUNED, ReductionStats
from framefusion.video import VideoClip

MODES = ("blank", "mean")
BLANK_RGB = (236, 236, 236)  # regions of tokens merged away (Fig. 21)
PRUNED_RGB = (70, 12, 12)  # dark red base of pruned regions
HATCH_RGB = (225, 45, 45)  # diagonal hatch over pruned regions
GRID_RGB = (150, 150, 150)  # token-grid lines
TILE_SIDE = 256  # longer side of a frame on a sheet, pixels
PAD = 10  # gap between and around tiles
CAPTION = 24  # text band under each tile
HEADER = 86  # title, counts and legend above the tiles
MIN_WIDTH = 720  # sheets are at least this wide so the header fits
PLOT_INCHES, PLOT_DPI = (8.0, 4.5), 120  # tokens_per_layer.png: 960 x 540 px


# ---------------------------------------------------------------- token state and composed frames


def default_point(stats: ReductionStats) -> int:
    """After the last merge step; else after the last step; else point 0."""
    if stats.last_merge_point >= 0:
        return stats.last_merge_point
    return max((s.point for s in stats.steps), default=0)


def token_states(stats: ReductionStats, point: int) -> tuple[np.ndarray, np.ndarray]:
    """Owner [N_v] (alive token holding each token after `point`, -1 if lost) and how each left by then [N_v]."""
    owner = stats.representatives(point).cpu().numpy()
    gone = ((stats.removed_at >= 0) & (stats.removed_at <= point)).cpu().numpy()
    state = np.where(gone, stats.removed_by.cpu().numpy(), KEPT)  # KEPT, MERGED or PRUNED
    return owner, state


def token_bounds(size: int, cells: int) -> np.ndarray:
    """[cells + 1] integer pixel boundaries that tile `size` pixels into `cells` near-equal bands."""
    return np.round(np.arange(cells + 1) * size / cells).astype(np.int64)


def frame_token_maps(stats: ReductionStats, video: int, num_frames: int, height: int,
                     width: int) -> list[np.ndarray]:
    """Per sampled frame, [H, W] index (into the N_v tokens) of the `video` token covering each pixel."""
    grid = stats.grids[video]
    expected = math.ceil(num_frames / grid.raw_frames_per_frame)
    if expected != grid.frames:
        raise ValueError(f"video {video}: the clip has {num_frames} frames, which make {expected} grid frames "
                         f"at {grid.raw_frames_per_frame} per grid frame, but the model saw {grid.frames}")
    vid, frame, row, col = stats.token_grid.cpu().numpy().T
    ids = np.flatnonzero((vid == video) & (row < grid.rows))  # trailing tokens (NVILA's "\n") cover no pixels
    lut = np.full((grid.frames, grid.rows, grid.cols), -1, dtype=np.int64)  # [F, R, C]
    lut[frame[ids], row[ids], col[ids]] = ids  # -1: a cell with no token (a short last frame), drawn unchanged
    if (lut < 0).reshape(grid.frames, -1).all(axis=1).any():
        raise ValueError(f"video {video}: the statistics do not cover its whole token grid")
    row_of_y = np.repeat(np.arange(grid.rows), np.diff(token_bounds(height, grid.rows)))  # [H]
    col_of_x = np.repeat(np.arange(grid.cols), np.diff(token_bounds(width, grid.cols)))  # [W]
    per_grid_frame = [lut[f][np.ix_(row_of_y, col_of_x)] for f in range(grid.frames)]  # F x [H, W]
    return [per_grid_frame[t // grid.raw_frames_per_frame] for t in range(num_frames)]  # shared, not copied


def _pruned_look(frame: np.ndarray, period: int | None = None) -> np.ndarray:
    """[H, W, 3] uint8: the frame darkened toward red, with a diagonal red hatch."""
    height, width = frame.shape[:2]
    period = period or max(6, round(max(height, width) / 40))
    dim = frame.astype(np.float32) * 0.2 + np.asarray(PRUNED_RGB, np.float32) * 0.8
    ys, xs = np.ogrid[:height, :width]
    hatch = (ys + xs) % period < max(1, period // 4)  # [H, W]
    dim[hatch] = HATCH_RGB
    return dim.astype(np.uint8)


def compose_frames(clip: VideoClip, stats: ReductionStats, point: int | None = None, mode: str = "blank",
                   video: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: the clip's frames as the LLM holds them after `point` (merged blanked or group means)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    point = default_point(stats) if point is None else point
    if not 0 <= point <= stats.num_layers:
        raise ValueError(f"point must be in [0, {stats.num_layers}] (0: before layer 0, l + 1: after layer l); "
                         f"got {point}")
    if not 0 <= video < len(stats.grids):
        raise ValueError(f"video must be in [0, {len(stats.grids) - 1}]; got {video}")
    frames = np.asarray(clip.frames)  # [T, H, W, 3]
    count, height, width = frames.shape[:3]
    maps = frame_token_maps(stats, video, count, height, width)  # T x [H, W]
    owner, state = token_states(stats, point)
    n_v = owner.size

    if mode == "mean":  # pixel sums of every token's regions, then of every group
        sums, areas = np.zeros((n_v, 3)), np.zeros(n_v)  # per token: RGB sums and pixel counts
        for t in range(count):
            ids = maps[t].ravel()
            covered = ids >= 0
            ids = ids[covered]
            sums += np.stack([np.bincount(ids, frames[t, ..., c].ravel()[covered], n_v) for c in range(3)], axis=1)
            areas += np.bincount(ids, minlength=n_v)
        held = owner >= 0
        group_sums = np.stack([np.bincount(owner[held], sums[held, c], n_v) for c in range(3)], axis=1)
        group_pixels = np.bincount(owner[held], areas[held], n_v)
        group_size = np.bincount(owner[held], minlength=n_v)  # tokens per group, at its owner
        colour = np.round(group_sums / np.maximum(group_pixels, 1)[:, None]).astype(np.uint8)  # [N_v, 3]
        fill = held & (group_size[np.maximum(owner, 0)] > 1)  # [N_v] tokens of groups with 2+ members
        colour = colour[np.maximum(owner, 0)]  # [N_v, 3] each token's group colour
        lost = owner < 0  # pruned, or merged into a token pruned by `point`
    else:
        fill, lost = state == MERGED, state == PRUNED
        colour = np.broadcast_to(np.asarray(BLANK_RGB, np.uint8), (n_v, 3))

    # one more entry, "no token", which the maps' -1 cells index: their pixels stay as they are
    fill, lost = np.append(fill, False), np.append(lost, False)
    colour = np.concatenate([colour, np.zeros((1, 3), np.uint8)])
    out = frames.copy()
    for t in range(count):
        ids = maps[t]  # [H, W]
        filled, pruned = fill[ids], lost[ids]
        out[t][filled] = colour[ids[filled]]
        if pruned.any():
            out[t][pruned] = _pruned_look(frames[t])[pruned]
    return out


# ---------------------------------------------------------------- sheets of frames


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at `size` px, or Pillow's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _fitting_font(draw: ImageDraw.ImageDraw, text: str, size: int, room: int) -> ImageFont.ImageFont:
    """The largest font of at most `size` px (and at least 8) in which `text` fits in `room` pixels."""
    while size > 8 and draw.textlength(text, font=_font(size)) > room:
        size -= 1
    return _font(size)


def tile_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of a frame drawn on a sheet: longer side TILE_SIDE, aspect kept."""
    scale = TILE_SIDE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def sheet_size(num_frames: int, height: int, width: int, max_columns: int = 8) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of `num_frames` frames of height x width."""
    columns = max(1, min(max_columns, num_frames))
    rows = math.ceil(num_frames / columns)
    tile_h, tile_w = tile_size(height, width)
    return (max(MIN_WIDTH, columns * tile_w + (columns + 1) * PAD),
            HEADER + rows * (tile_h + CAPTION + PAD) + PAD)


def _tile(frame: np.ndarray, grid_cells: tuple[int, int] | None) -> Image.Image:
    """A frame scaled to its tile (nearest when enlarging, so token blocks stay sharp), with token-grid lines."""
    height, width = frame.shape[:2]
    tile_h, tile_w = tile_size(height, width)
    resample = Image.NEAREST if tile_w >= width else Image.LANCZOS
    image = Image.fromarray(frame).resize((tile_w, tile_h), resample)
    if grid_cells is None or min(tile_h / grid_cells[0], tile_w / grid_cells[1]) < 6:
        return image  # no lines where they would hide the picture
    pixels = np.array(image)  # [h, w, 3]
    ys = np.clip(token_bounds(tile_h, grid_cells[0]), 0, tile_h - 1)
    xs = np.clip(token_bounds(tile_w, grid_cells[1]), 0, tile_w - 1)
    line = np.asarray(GRID_RGB, np.uint16)
    pixels[ys] = (pixels[ys] + line) // 2
    pixels[:, xs] = (pixels[:, xs] + line) // 2
    return Image.fromarray(pixels)


def _swatch(kind: str) -> Image.Image:
    """A 16 x 16 legend swatch: 'pixels' (a colourful patch), 'blank', 'mean' or 'pruned'."""
    ramp = np.linspace(40, 220, 16)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((16, 16), 140.0)), -1)
    pixels = pixels.astype(np.uint8)  # [16, 16, 3]
    if kind == "blank":
        pixels[:] = BLANK_RGB
    elif kind == "mean":
        pixels[:] = pixels.reshape(-1, 3).mean(0).astype(np.uint8)
    elif kind == "pruned":
        pixels = _pruned_look(pixels, period=6)
    return Image.fromarray(pixels)


def _sheet(frames: np.ndarray, captions: Sequence[str], title: str, subtitle: str,
           legend: Sequence[tuple[str, str]], max_columns: int,
           grid_cells: tuple[int, int] | None = None) -> Image.Image:
    """Frames [T, H, W, 3] in a captioned grid under a title, a subtitle and a row of (label, swatch) entries."""
    count, height, width = frames.shape[:3]
    sheet_w, sheet_h = sheet_size(count, height, width, max_columns)
    columns = max(1, min(max_columns, count))
    tile_h, tile_w = tile_size(height, width)
    left = (sheet_w - (columns * tile_w + (columns + 1) * PAD)) // 2 + PAD  # centre the grid
    sheet = Image.new("RGB", (sheet_w, sheet_h), "white")
    draw = ImageDraw.Draw(sheet)
    room = sheet_w - 2 * PAD
    draw.text((PAD, 8), title, fill="black", font=_fitting_font(draw, title, 19, room))
    draw.text((PAD, 36), subtitle, fill=(70, 70, 70), font=_fitting_font(draw, subtitle, 14, room))
    font = _fitting_font(draw, "   ".join(label + "       " for label, _ in legend), 14, room)
    x = PAD
    for label, kind in legend:
        sheet.paste(_swatch(kind), (x, 61))
        draw.rectangle((x - 1, 60, x + 16, 77), outline=(90, 90, 90))
        draw.text((x + 23, 61), label, fill="black", font=font)
        x += 23 + int(draw.textlength(label, font=font)) + 26
    for i, (frame, caption) in enumerate(zip(frames, captions)):
        x = left + (i % columns) * (tile_w + PAD)
        y = HEADER + (i // columns) * (tile_h + CAPTION + PAD)
        sheet.paste(_tile(frame, grid_cells), (x, y))
        draw.text((x + tile_w // 2, y + tile_h + 5), caption, fill="black", anchor="mt",
                  font=_fitting_font(draw, caption, 13, tile_w + PAD))
    return sheet


def _captions(clip: VideoClip, per_grid_frame: int = 1) -> list[str]:
    """'#i  t = s' per sampled frame, with its grid frame when several sampled frames share one."""
    captions = []
    for i, seconds in enumerate(np.asarray(clip.timestamps, dtype=float)):
        text = f"#{i}   t = {seconds:.2f} s"
        captions.append(f"{text}   (grid frame {i // per_grid_frame})" if per_grid_frame > 1 else text)
    return captions


def _point_name(point: int) -> str:
    """How a reduction point reads in a caption."""
    return "before layer 0's attention" if point == 0 else f"after layer {point - 1}'s attention"


# ---------------------------------------------------------------- figures


def plot_tokens_per_layer(stats: ReductionStats, path: str | Path) -> Path:
    """Vision tokens in each layer's KV cache against the dense count (paper Fig. 14), written as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg directly: no pyplot, no display
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts = stats.vision_tokens_per_layer()
    layers = np.arange(stats.num_layers)
    dense = stats.num_vision_tokens
    figure = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.axhline(dense, linestyle="--", color="0.45", label=f"dense ($N_v$ = {dense})")
    edges = np.arange(stats.num_layers + 1) - 0.5  # layer l spans [l - 0.5, l + 0.5]
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.12)
    ax.stairs(counts, edges, color="tab:blue", linewidth=2, label=f"{stats.method} (this run)")
    ax.plot(layers, counts, "o", color="tab:blue", markersize=4)
    for step in stats.steps:  # a removal at point p first shows in layer p's cache
        if step.removed and step.point < stats.num_layers:
            ax.axvline(step.point - 0.5, color="tab:red" if step.kind == "prune" else "tab:green",
                       linestyle=":", linewidth=1.2)
            ax.annotate(f"{step.kind} \u2212{step.removed}", (step.point - 0.5, dense * 1.04), fontsize=8,
                        xytext=(4 if step.point == 0 else 0, 0), textcoords="offset points",
                        ha="left" if step.point == 0 else "center", color="0.25")
    ax.set_xlim(-0.5, max(stats.num_layers - 0.5, 0.5))
    ax.set_ylim(0, max(dense, 1) * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("vision tokens in the KV cache")
    videos = f", {len(stats.grids)} videos" if len(stats.grids) > 1 else ""
    ax.set_title(f"Vision tokens per layer{videos}: kept_ratio {stats.kept_ratio:.3f} of dense")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", frameon=True, framealpha=0.9)
    figure.savefig(path)
    return Path(path)


def render_visualization(clip: VideoClip, stats: ReductionStats, out_dir: str | Path, *, point: int | None = None,
                         video: int = 0, max_columns: int = 8) -> list[Path]:
    """Write merged_blank.png, merged_mean.png, tokens_per_layer.png and contact_sheet.png; return their paths."""
    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1; got {max_columns}")
    point = default_point(stats) if point is None else point
    blank = compose_frames(clip, stats, point, "blank", video)  # checks point, video and the frame count
    mean = compose_frames(clip, stats, point, "mean", video)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = stats.grids[video]
    owner, state = token_states(stats, point)
    ours = stats.token_grid[:, 0].cpu().numpy() == video  # [N_v] tokens of this video
    kept, merged, pruned = (int((state[ours] == s).sum()) for s in (KEPT, MERGED, PRUNED))
    group_size = np.bincount(owner[ours & (owner >= 0)], minlength=owner.size)  # [N_v] at each owner
    groups, grouped = int((group_size > 1).sum()), int(group_size[group_size > 1].sum())
    subtitle = (f"video {video}: {grid.frames} grid frames x {grid.rows}x{grid.cols} = {int(ours.sum())} tokens, "
                f"state after point {point} ({_point_name(point)})")
    captions = _captions(clip, grid.raw_frames_per_frame)
    cells = (grid.rows, grid.cols)
    sheets = {
        "merged_blank.png": _sheet(blank, captions, f"{stats.method}: merged tokens blanked", subtitle,
                                   [(f"kept: {kept}", "pixels"), (f"merged away: {merged}", "blank"),
                                    (f"pruned: {pruned}", "pruned")], max_columns, cells),
        "merged_mean.png": _sheet(mean, captions, f"{stats.method}: merged groups filled with their mean colour",
                                  subtitle, [(f"single tokens: {int((group_size == 1).sum())}", "pixels"),
                                             (f"merged: {groups} group{'s' * (groups != 1)} of {grouped} tokens",
                                              "mean"),
                                             (f"pruned, or merged into pruned: {int((owner[ours] < 0).sum())}",
                                              "pruned")], max_columns, cells),
    }
    paths = []
    for name, image in sheets.items():
        image.save(out_dir / name)
        paths.append(out_dir / name)
    paths.append(plot_tokens_per_layer(stats, out_dir / "tokens_per_layer.png"))
    frames = np.asarray(clip.frames)
    source = f": {Path(clip.source).name}" if clip.source else ""
    contact = _sheet(frames, _captions(clip), f"Sampled frames{source}",
                     f"{clip.num_frames} frames of {frames.shape[2]}x{frames.shape[1]} px from "
                     f"{clip.duration:.2f} s at {clip.fps:.2f} fps", [], max_columns)
    contact.save(out_dir / "contact_sheet.png")
    paths.append(out_dir / "contact_sheet.png")
    return paths
