"""Profiling: medians per component, speed-ups over dense, KV-cache bytes, and the Fig. 8 chart."""

from __future__ import annotations

import pytest
from cli_helpers import PROFILE_RUN_KEYS, tiny_checkpoint, video_file  # noqa: F401
from conftest import make_random_clip
from PIL import Image

from framefusion.pipeline.loading import load_model
from framefusion.pipeline.profiling import ProfileRun, count_runs, plot_profile, profile_runs, subsample


@pytest.fixture(scope="module")
def runs(tiny_checkpoint) -> list[ProfileRun]:  # noqa: F811
    loaded = load_model(str(tiny_checkpoint), device="cpu")
    clip = make_random_clip(8, size=64, static_fraction=0.5)
    steps: list[str] = []
    result = profile_runs(loaded, clip, budgets=[0.3], frame_counts=[4, 8], repeats=1, warmup=0, new_tokens=3,
                          on_step=steps.append)
    assert len(steps) == count_runs([0.3], [4, 8], repeats=1, warmup=0) == 8
    return result


def test_runs_cover_dense_and_each_budget_per_frame_count(runs):
    assert [(r.method, r.budget, r.frames) for r in runs] == [
        ("dense", 1.0, 4), ("framefusion", 0.3, 4), ("dense", 1.0, 8), ("framefusion", 0.3, 8)]
    assert all(set(r.to_dict()) == PROFILE_RUN_KEYS for r in runs)


def test_dense_is_the_reference(runs):
    for dense in (r for r in runs if r.method == "dense"):
        assert dense.kept_ratio == 1.0 and dense.ideal_speedup == 1.0
        assert dense.speedup_prefill == pytest.approx(1.0) and dense.speedup_end_to_end == pytest.approx(1.0)


def test_reduced_runs_keep_less(runs):
    dense, reduced = runs[2], runs[3]
    assert reduced.vision_tokens == dense.vision_tokens == 64
    assert reduced.kept_ratio == pytest.approx(0.3, abs=0.05)
    assert reduced.kv_cache_bytes < dense.kv_cache_bytes
    assert reduced.ideal_speedup > 1.0
    assert reduced.speedup_prefill == pytest.approx(dense.prefill_s / reduced.prefill_s)
    for run in runs:
        assert run.vision_s > 0 and run.prefill_s > 0 and run.decode_per_token_s > 0 and run.peak_memory_bytes > 0
        assert run.total_s == pytest.approx(run.video_s + run.processor_s + run.vision_s + run.prefill_s
                                            + 2 * run.decode_per_token_s)
        assert run.video_s == 0.0 and run.processor_s > 0 and run.num_layers == 4  # a clip passed in: no decoding


def test_a_video_file_is_decoded_once_per_frame_count_and_timed(tiny_checkpoint, video_file):  # noqa: F811
    loaded = load_model(str(tiny_checkpoint), device="cpu")
    runs = profile_runs(loaded, video_file, budgets=[0.3], frame_counts=[4, 8], repeats=1, warmup=0, new_tokens=2)
    assert [r.frames for r in runs] == [4, 4, 8, 8]
    assert all(r.video_s > 0 for r in runs) and runs[0].video_s == runs[1].video_s  # shared at one frame count
    with pytest.raises(ValueError, match="only 8 frames"):
        profile_runs(loaded, video_file, frame_counts=[16], repeats=1, warmup=0, new_tokens=2)


def test_subsample_and_too_many_frames():
    clip = make_random_clip(8)
    assert subsample(clip, 4).timestamps.tolist() == clip.timestamps[[1, 3, 5, 7]].tolist()
    with pytest.raises(ValueError, match="cannot take 9 frames"):
        subsample(clip, 9)


def test_plot_profile_writes_a_png(runs, tmp_path):
    path = plot_profile(runs, tmp_path / "profile.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
