"""Seek-based sampling with PyAV: the plan on packet indexes, and exact frames against a full decode."""

from __future__ import annotations

import numpy as np
import pytest
from reference_video import decode_everything as reference_video_decode
from reference_video import reference_sample

from framefusion.video import load_video, pyav_reader, write_video
from framefusion.video.seek_plan import plan_decode, start_positions

FPS = 30.0


# ---------------------------------------------------------------- the plan, on synthetic indexes


def closed_gops(frames: int, gop: int) -> tuple[np.ndarray, np.ndarray]:
    """pts and keyframe flags in decode order of a stream with a keyframe every `gop` frames and no B-frames."""
    return np.arange(frames), np.arange(frames) % gop == 0


def test_start_is_the_keyframe_at_or_before_each_target():
    pts, key = closed_gops(100, 10)
    assert start_positions(pts, key, np.array([0, 9, 10, 55, 99])).tolist() == [0, 0, 10, 50, 90]


def test_a_leading_picture_of_an_open_gop_starts_one_gop_earlier():
    # decode order: I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8 ; B4 and B5 (pts before I6) lead the second GOP
    pts = np.array([0, 3, 1, 2, 6, 4, 5, 9, 7, 8])
    key = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    assert start_positions(pts, key, np.array([5, 6, 7, 8])).tolist() == [0, 0, 4, 4]


def test_sparse_targets_seek_and_dense_targets_decode_in_one_pass():
    pts, key = closed_gops(3000, 250)
    sparse = plan_decode(pts, key, np.array([100, 1100, 2100]))
    assert sparse.seeks == 2 and sparse.packets == 101 + 101 + 101
    assert [run.start for run in sparse.runs] == [0, 1000, 2000]
    dense = plan_decode(pts, key, np.arange(5, 3000, 10))
    assert dense.seeks == 0 and len(dense.runs) == 1 and dense.packets == 2996


def test_targets_in_one_gop_share_a_run():
    pts, key = closed_gops(1000, 100)
    plan = plan_decode(pts, key, np.array([510, 520, 590, 905]))
    assert [(run.start, run.end, run.targets) for run in plan.runs] == [(500, 590, (510, 520, 590)),
                                                                         (900, 905, (905,))]


def test_a_run_started_later_is_extended_back_for_a_leading_picture():
    pts = np.array([0, 3, 1, 2, 6, 4, 5, 9, 7, 8] + list(range(10, 40)))
    key = np.zeros(pts.size, dtype=bool)
    key[[0, 4]] = True
    plan = plan_decode(pts, key, np.array([4, 5]), seek_cost=0)  # I6 starts at 4, B4 needs position 0
    assert [run.start for run in plan.runs] == [0]


# ---------------------------------------------------------------- exact frames on real files


def textured_frames(count: int, height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """A drifting texture with a moving block: every frame differs, neighbours are similar (as in real video)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height, 2 * width, 3), dtype=np.uint8)
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = texture[:, i % width: i % width + width]
        top, left = (3 * i) % (height - 16), (5 * i) % (width - 16)
        frames[i, top:top + 16, left:left + 16] = (255, (37 * i) % 256, 0)
    return frames


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    """Files with B-frames and GOP structures that make seeking non-trivial."""
    folder = tmp_path_factory.mktemp("gops")
    frames = textured_frames(240)
    rng = np.random.default_rng(1)
    vfr = np.round(np.cumsum(np.r_[0.0, rng.uniform(0.01, 0.09, 239)]), 3)
    sideways = np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2)))
    return {
        "closed": write_video(folder / "closed.mp4", frames, FPS, keyframe_interval=24, b_frames=3),
        "open": write_video(folder / "open.mp4", frames, FPS, keyframe_interval=24, b_frames=3, open_gop=True),
        "vfr": write_video(folder / "vfr.mp4", frames, FPS, timestamps=vfr, keyframe_interval=24, b_frames=2),
        "late_start": write_video(folder / "late.mkv", frames, FPS, timestamps=7.25 + np.arange(240) / FPS,
                                  keyframe_interval=30, b_frames=2),
        "rotated": write_video(folder / "rotated.mp4", sideways, FPS, rotation=90, keyframe_interval=24,
                               b_frames=2),
        "mpeg4": write_video(folder / "mpeg4.mp4", frames, FPS, codec="mpeg4", keyframe_interval=24, b_frames=2),
        "transport": write_video(folder / "stream.ts", frames, FPS, keyframe_interval=24, b_frames=3),
    }


SAMPLINGS = [{"num_frames": 3}, {"num_frames": 7}, {"num_frames": 16}, {"fps": 4.0}, {"fps": 1000.0, "max_frames": 256}]


@pytest.mark.parametrize("threads", [1, 2])  # the free cores decide between seeking and one threaded pass
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: "-".join(f"{k}{v:g}" for k, v in s.items()))
@pytest.mark.parametrize("name", ["closed", "open", "vfr", "late_start", "rotated", "mpeg4", "transport"])
def test_frames_equal_a_full_sequential_decode(gop_videos, name, sampling, threads, monkeypatch):
    monkeypatch.setattr(pyav_reader, "decode_threads", lambda: threads)
    frames, timestamps, _ = reference_sample(gop_videos[name], **sampling)
    clip = load_video(gop_videos[name], **sampling)
    assert clip.frames.shape == frames.shape
    assert np.array_equal(clip.frames, frames)  # same pixels at the same sample times
    np.testing.assert_allclose(clip.timestamps, timestamps, atol=1e-9)


def test_sparse_sampling_decodes_a_fraction_of_the_packets(gop_videos):
    reports = []
    clip = load_video(gop_videos["closed"], num_frames=4, on_progress=lambda done, total: reports.append(total))
    assert clip.num_frames == 4 and reports
    assert reports[-1] < 240 / 2  # 4 samples from 10 GOPs of 24 frames: about half a GOP each


def test_a_seek_that_lands_early_decodes_from_the_planned_keyframe(gop_videos, monkeypatch):
    """In this VFR mp4 FFmpeg's backward seek lands on the previous keyframe (often the first): the packets before
    the planned keyframe are read but not decoded, so the decoder does the plan's work, exactly."""
    path = gop_videos["vfr"]
    index = pyav_reader.read_index(path)
    keys = np.flatnonzero(index.keyframe)
    landed = []
    with pyav_reader.open_container(path) as container:
        stream = container.streams.video[0]
        for key in keys[1:]:
            container.seek(int(index.pts[key]), stream=stream, backward=True)
            first = next(packet for packet in container.demux(stream) if packet.pts is not None)
            landed.append(int(np.flatnonzero(index.pts == first.pts)[0]) < key)
    assert sum(landed) >= len(landed) // 2  # the file shows the behaviour
    decoded = []
    original = pyav_reader._decode
    monkeypatch.setattr(pyav_reader, "_decode", lambda packet: decoded.append(packet) or original(packet))
    monkeypatch.setattr(pyav_reader, "decode_threads", lambda: 1)
    frames, _, _ = reference_sample(path, num_frames=4)
    decoded.clear()
    clip = load_video(path, num_frames=4)
    assert np.array_equal(clip.frames, frames)
    times = index.times
    from framefusion.video.sampling import sample_indices

    wanted = index.presentation[sample_indices(times, index.duration, num_frames=4, max_frames=256)]
    plan = plan_decode(index.pts, index.keyframe, np.flatnonzero(np.isin(index.pts, wanted)))
    assert plan.seeks >= 2
    assert len(decoded) <= plan.packets + 4 * len(plan.runs)  # B-frame reordering delays a few per run


def test_free_cores_make_one_threaded_pass_the_plan_for_short_files():
    pts, key = closed_gops(900, 250)  # 30 s at 30 fps, a keyframe every 250 frames
    targets = np.linspace(10, 880, 24).astype(int)
    single, threaded = plan_decode(pts, key, targets), plan_decode(pts, key, targets, threads=2)
    assert single.seeks > 0 and threaded.seeks == 0 and len(threaded.runs) == 1
    assert plan_decode(pts, key, np.array([100, 600]), threads=2).seeks == 1  # two far-apart samples still seek


def test_a_failed_seek_falls_back_to_one_pass_and_stays_exact(gop_videos, monkeypatch):
    original = pyav_reader._decode_run
    calls = []

    def second_seek_fails(container, stream, run, *args, **kwargs):
        calls.append(run.seek)
        if run.seek and calls.count(True) == 2:
            raise pyav_reader._SeekFailed
        return original(container, stream, run, *args, **kwargs)

    monkeypatch.setattr(pyav_reader, "_decode_run", second_seek_fails)
    frames, _, _ = reference_sample(gop_videos["closed"], num_frames=5)
    clip = load_video(gop_videos["closed"], num_frames=5)
    assert calls.count(True) >= 2 and calls[-1] is False  # the rest ran as one sequential pass
    assert np.array_equal(clip.frames, frames)


def test_leading_pictures_of_open_gops_decode_exactly(gop_videos):
    path = gop_videos["open"]
    index = pyav_reader.read_index(path)
    latest_key = np.maximum.accumulate(np.where(index.keyframe, np.arange(index.pts.size), 0))
    leading = np.flatnonzero(index.pts < index.pts[latest_key])  # shown before the keyframe they follow
    assert leading.size >= 5  # the encoder made open GOPs
    targets = leading[1::2]  # every other one: each needs a seek into the previous GOP
    plan = pyav_reader.plan_decode(index.pts, index.keyframe, targets)
    assert plan.seeks >= 2
    arrays, _ = pyav_reader.decode_frames(path, index, index.pts[targets], plan)
    pts, frames, *_ = reference_video_decode(path)
    for position in targets.tolist():
        wanted = int(index.pts[position])
        assert np.array_equal(arrays[wanted], frames[int(np.flatnonzero(pts == wanted)[0])])
