"""Figures of a reducing prefill: composed frames checked pixel by pixel against a slow reference, PNG sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import forward_reduced, make_random_clip
from PIL import Image

from framefusion.core.contract import QueryKeys
from framefusion.core.layout import VideoGrid, layout_from_videos
from framefusion.core.stack import DecoderStack
from framefusion.core.stats import MERGED, PRUNED, StepRecord
from framefusion.methods.framefusion import FrameFusionConfig, PrefillReduction
from framefusion.pipeline.visualize import (
    BLANK_RGB,
    HEADER,
    compose_frames,
    default_point,
    render_visualization,
    token_bounds,
)

NUM_LAYERS = 6
# video 0: 5 sampled frames folded 2 per grid frame (the third grid frame is frame 4 plus a pad); video 1: 3 frames
GRIDS = [VideoGrid(3, 3, 4, raw_frames_per_frame=2), VideoGrid(3, 2, 2)]
SIZES = [(48, 64), (40, 40)]  # (H, W) of each clip; 48 / 3 and 40 / 2 rows tile exactly, 64 / 4 and 40 / 2 cols too


@pytest.fixture(scope="module")
def case():
    """Two clips and the stats of a merge step (point 0) then a prune step (point 1) over both videos."""
    clips = [make_random_clip(5, seed=1), make_random_clip(3, seed=2)]
    clips = [dataclasses.replace(c, frames=np.ascontiguousarray(c.frames[:, :h, :w]))
             for c, (h, w) in zip(clips, SIZES)]
    n0, n1 = (g.frames * g.tokens_per_frame for g in GRIDS)
    layout = layout_from_videos(3 + n0 + 2 + n1 + 2, [torch.arange(3, 3 + n0), torch.arange(5 + n0, 5 + n0 + n1)],
                                GRIDS)
    torch.manual_seed(0)
    hidden = torch.randn(1, layout.seq_len, 16)
    hidden[0, 3 + 12:3 + 18] = hidden[0, 3:9]  # grid frame 1 repeats patches 0-5 of grid frame 0
    hidden[0, 3 + 24] = hidden[0, 3]  # grid frame 2 patch 0 too: a group spanning three grid frames
    config = FrameFusionConfig(cost=0.3, ratio_lower_bound=0.2, importance_queries=1)
    run = PrefillReduction(layout, config, DecoderStack.attention_only(NUM_LAYERS), torch.device("cpu"))
    out = run.step(0, hidden)
    run.step(1, out, QueryKeys(torch.randn(1, 4, 8), torch.randn(2, out.shape[1], 8), 0.35))
    stats = run.stats()
    assert [s.kind for s in stats.steps] == ["merge", "prune"]
    assert stats.removed_by.eq(MERGED).sum() == 7 and stats.removed_by.eq(PRUNED).any()
    return clips, stats


def reference_regions(stats, video, num_frames, height, width):
    """Slow reference: (token id, sampled frame, pixel rows slice, pixel cols slice) for every token region."""
    grid = stats.grids[video]
    ys, xs = token_bounds(height, grid.rows), token_bounds(width, grid.cols)
    regions = []
    for token, (v, f, r, c) in enumerate(stats.token_grid.tolist()):
        if v != video:
            continue
        for t in range(f * grid.raw_frames_per_frame, min((f + 1) * grid.raw_frames_per_frame, num_frames)):
            regions.append((token, t, slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1])))
    return regions


def reference_owner(stats, token, point):
    """Follow merged_into by hand: the token holding `token` after `point`, or -1 if lost to pruning."""
    while True:
        at, by = int(stats.removed_at[token]), int(stats.removed_by[token])
        if at < 0 or at > point:
            return token
        if by == PRUNED:
            return -1
        token = int(stats.merged_into[token])


@pytest.mark.parametrize("video", [0, 1])
@pytest.mark.parametrize("point", [0, 1, NUM_LAYERS])
def test_blank_keeps_kept_blanks_merged_marks_pruned(case, video, point):
    clips, stats = case
    clip = clips[video]
    got = compose_frames(clip, stats, point, "blank", video)
    assert got.shape == clip.frames.shape and got.dtype == np.uint8
    seen = set()
    for token, t, rows, cols in reference_regions(stats, video, *clip.frames.shape[:3]):
        region, source = got[t, rows, cols], clip.frames[t, rows, cols]
        gone = 0 <= int(stats.removed_at[token]) <= point
        how = int(stats.removed_by[token]) if gone else None
        seen.add(how)
        if how is None:
            np.testing.assert_array_equal(region, source)
        elif how == MERGED:
            assert (region == BLANK_RGB).all() and (region != source).any()
        else:
            assert (region != source).any() and (region != BLANK_RGB).any(axis=-1).all()
    if video == 0:
        assert seen == ({None, MERGED} if point == 0 else {None, MERGED, PRUNED})


@pytest.mark.parametrize("point", [0, NUM_LAYERS])
def test_mean_fills_each_group_with_its_mean_colour(case, point):
    clips, stats = case
    clip = clips[0]
    got = compose_frames(clip, stats, point, "mean", 0)
    blank = compose_frames(clip, stats, point, "blank", 0)
    regions = reference_regions(stats, 0, *clip.frames.shape[:3])
    groups: dict[int, list] = {}
    for region in regions:
        groups.setdefault(reference_owner(stats, region[0], point), []).append(region)
    big = [owner for owner, members in groups.items() if owner >= 0 and len({m[0] for m in members}) > 1]
    assert big  # the three-frame group of patch 0 at least
    for owner, members in groups.items():
        if owner < 0:  # pruned, or merged into a pruned token: marked as pruned, unlike any merge or the source
            for token, t, rows, cols in members:
                assert (got[t, rows, cols] != BLANK_RGB).any(axis=-1).all()
                assert (got[t, rows, cols] != clip.frames[t, rows, cols]).any()
                if int(stats.removed_by[token]) == PRUNED:
                    np.testing.assert_array_equal(got[t, rows, cols], blank[t, rows, cols])
        elif owner in big:
            pixels = np.concatenate([clip.frames[t, rows, cols].reshape(-1, 3) for _, t, rows, cols in members])
            mean = np.round(pixels.mean(axis=0)).astype(np.uint8)
            for _, t, rows, cols in members:
                assert (got[t, rows, cols] == mean).all()
        else:  # a single token keeps its pixels
            for _, t, rows, cols in members:
                np.testing.assert_array_equal(got[t, rows, cols], clip.frames[t, rows, cols])


def test_odd_frame_count_maps_the_padded_grid_frame(case):
    clips, stats = case
    clip = clips[0]  # 5 frames, 2 per grid frame: frame 4 alone in grid frame 2
    got = compose_frames(clip, stats, 0, "blank", 0)
    patch0_frame2 = 24  # merged into patch 0 of grid frame 0 at point 0
    assert int(stats.removed_by[patch0_frame2]) == MERGED and int(stats.merged_into[patch0_frame2]) == 0
    assert (got[4, :16, :16] == BLANK_RGB).all()
    np.testing.assert_array_equal(got[:2, :16, :16], clip.frames[:2, :16, :16])  # the group's head is kept
    with pytest.raises(ValueError, match="grid frames"):
        compose_frames(dataclasses.replace(clip, frames=clip.frames[:3]), stats, 0, "blank", 0)


def test_default_point_and_bad_arguments(case):
    clips, stats = case
    assert default_point(stats) == 0  # the last merge step
    assert default_point(dataclasses.replace(stats, steps=[StepRecord(3, "prune", 10, 5, 0.5)])) == 3
    assert default_point(dataclasses.replace(stats, steps=[])) == 0
    with pytest.raises(ValueError, match="point"):
        compose_frames(clips[0], stats, NUM_LAYERS + 1)
    with pytest.raises(ValueError, match="mode"):
        compose_frames(clips[0], stats, 0, "median")
    with pytest.raises(ValueError, match="video"):
        compose_frames(clips[0], stats, 0, video=2)


# video 0: 64x48 frames drawn 256x192, 3 columns x 2 rows -> 3 * 256 + 4 * PAD wide;
# video 1: 40x40 frames drawn 256x256, 2 columns x 2 rows -> 542 px of tiles, widened to the 720 px minimum.
# Height: HEADER + rows * (tile + caption + PAD) + PAD.
@pytest.mark.parametrize("video, max_columns, size", [(0, 3, (808, 548)), (1, 2, (720, 676))])
def test_render_writes_four_pngs_of_the_expected_sizes(case, tmp_path, video, max_columns, size):
    clips, stats = case
    paths = render_visualization(clips[video], stats, tmp_path / "figs", point=NUM_LAYERS, video=video,
                                 max_columns=max_columns)
    assert [p.name for p in paths] == ["merged_blank.png", "merged_mean.png", "tokens_per_layer.png",
                                       "contact_sheet.png"]
    assert all(p.parent == tmp_path / "figs" for p in paths)
    sizes = [Image.open(p).size for p in paths]
    assert sizes[0] == sizes[1] == sizes[3] == size
    assert sizes[2] == (960, 540)
    blank, mean, contact = (np.asarray(Image.open(paths[i]).convert("RGB"))[HEADER:] for i in (0, 1, 3))
    assert (blank != contact).any() and (mean != contact).any()
    assert (blank != mean).any() == (video == 0)  # only video 0 has merges; video 1 was only pruned


def test_end_to_end_with_a_tiny_model(tmp_path, tiny_model_factory):
    from framefusion.video.prompting import prepare_inputs

    model, processor = tiny_model_factory("qwen2_vl")
    clip = make_random_clip(8, static_fraction=0.5)
    inputs = prepare_inputs(processor, [clip], "What is happening in the video?")
    _, stats = forward_reduced(model, inputs, "framefusion", 0.3)
    paths = render_visualization(clip, stats, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    point = default_point(stats)
    assert point == stats.last_merge_point >= 0
    blank = compose_frames(clip, stats, point, "blank")
    merged = (stats.removed_by == MERGED) & (stats.removed_at >= 0) & (stats.removed_at <= point)
    assert merged.any()
    changed = (blank != clip.frames).any(axis=-1)  # [T, H, W]
    assert changed.any() and not changed.all()
