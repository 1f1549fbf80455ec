"""`framefusion calibrate`: the paper's threshold (mean over videos of the median first-layer similarity) against
an obviously correct reference, the store, and what later runs use."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, single_json
from typer.testing import CliRunner

from ffcli.main import app
from framefusion.methods.framefusion import thresholds
from framefusion.tiny import save_tiny_checkpoint
from framefusion.video import load_video, write_video
from framefusion.video.prompting import prepare_inputs

runner = CliRunner()
FRAMES = 8


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], prog_name="framefusion", env={"COLUMNS": "200", **(env or {})})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A calibration store of the test's own."""
    monkeypatch.setenv("FRAMEFUSION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three short clips (static top half, moving bottom half, different speeds) in one folder."""
    folder = tmp_path_factory.mktemp("calibration-videos")
    rng = np.random.default_rng(5)
    for index in range(3):
        frames = rng.integers(0, 256, size=(FRAMES, 64, 64, 3), dtype=np.uint8)
        frames[:, : 16 * (index + 1)] = frames[0, : 16 * (index + 1)]
        write_video(folder / f"clip{index}.mp4", frames, fps=4.0)
    return folder


@pytest.fixture(scope="module", params=["qwen2_vl", "llava_onevision"])
def checkpoint(request, tmp_path_factory) -> Path:
    return save_tiny_checkpoint(request.param, tmp_path_factory.mktemp("ckpt") / request.param)


def reference_threshold(checkpoint: Path, files: list[Path]) -> float:
    """By hand: the first decoder layer's input of a dense forward, each video token against the token of the same
    row and column one frame earlier (found from the processor's grid), cosine in float64, the median per video,
    the mean of the medians."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    config = model.config
    layers = model.model.language_model.layers
    medians = []
    for path in files:
        clip = load_video(path, num_frames=FRAMES)
        inputs = prepare_inputs(processor, [clip], "Describe the video.")
        captured = {}

        def grab(_module, args, kwargs):
            captured.setdefault("h", (args[0] if args else kwargs["hidden_states"])[0])

        handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        with torch.no_grad():
            model(**inputs)
        handle.remove()
        hidden = captured["h"].double()
        positions = torch.nonzero(inputs["input_ids"][0] == config.video_token_id).flatten().tolist()
        if config.model_type == "qwen2_vl":
            t, h, w = inputs["video_grid_thw"][0].tolist()
            merge = config.vision_config.spatial_merge_size
            grid_frames, per_frame = t, (h // merge) * (w // merge)
        else:  # LLaVA-OneVision: frames x (side x side) pooled tokens, then one newline token
            grid_frames = inputs["pixel_values_videos"].shape[1]
            per_frame = (len(positions) - 1) // grid_frames
        similarities = []
        for frame in range(1, grid_frames):
            for patch in range(per_frame):
                a = hidden[positions[frame * per_frame + patch]]
                b = hidden[positions[(frame - 1) * per_frame + patch]]
                similarities.append(float(a @ b / (a.norm() * b.norm())))
        medians.append(statistics.median(similarities))
    return sum(medians) / len(medians)


def test_calibrate_equals_the_reference_and_later_runs_use_it(checkpoint, videos, cache):
    files = sorted(videos.glob("*.mp4"))
    result = run("calibrate", videos, "--model", checkpoint, "--frames", FRAMES, "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    expected = reference_threshold(checkpoint, files)
    assert abs(payload["threshold"] - expected) < 1e-4, (payload["threshold"], expected)
    assert [v["video"] for v in payload["videos"]] == [str(f) for f in files]
    stored = json.loads((cache / "calibrations.json").read_text())["models"]
    assert len(stored) == 1 and abs(next(iter(stored.values()))["threshold"] - expected) < 1e-4

    asked = run("ask", files[0], "What is it?", "--model", checkpoint, "--frames", FRAMES, "--max-new-tokens", 1,
                "--json")
    assert asked.exit_code == 0, asked.stderr
    answer = single_json(asked.stdout)
    assert answer["similarity_threshold"] == pytest.approx(payload["threshold"])
    assert answer["threshold_source"].startswith("calibrated: on 3 videos, 8 frames")
    given = run("ask", files[0], "What is it?", "--model", checkpoint, "--frames", FRAMES, "--max-new-tokens", 1,
                "--json", "--similarity", "0.42")
    answer = single_json(given.stdout)
    assert answer["similarity_threshold"] == 0.42 and answer["threshold_source"].startswith("given")

    shown = run("calibrate", "--show", "--model", checkpoint, "--json")
    assert shown.exit_code == 0, shown.stderr
    assert single_json(shown.stdout)["threshold"] == pytest.approx(payload["threshold"])


def test_a_different_checkpoint_does_not_pick_up_a_calibration(videos, cache, tmp_path):
    first = save_tiny_checkpoint("qwen2_vl", tmp_path / "a", seed=0)
    second = save_tiny_checkpoint("qwen2_vl", tmp_path / "b", seed=1)  # same shapes, other weights
    assert run("calibrate", videos, "--model", first, "--frames", FRAMES).exit_code == 0
    shown = single_json(run("calibrate", "--show", "--model", second, "--json").stdout)
    assert shown["stored"] is None and shown["threshold"] == 0.5  # Qwen2-VL's default, the authors' value
    assert shown["threshold_source"].startswith("family default: Qwen2-VL")


def test_unreadable_videos_are_skipped_with_a_warning_and_none_readable_is_an_error(videos, cache, tmp_path):
    checkpoint = save_tiny_checkpoint("qwen2_vl", tmp_path / "ckpt")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    result = run("calibrate", videos / "clip0.mp4", broken, "--model", checkpoint, "--frames", FRAMES, "--json")
    assert result.exit_code == 0, result.stderr
    assert f"skipped {broken}" in result.stderr
    assert [s["video"] for s in single_json(result.stdout)["skipped"]] == [str(broken)]
    failed = run("calibrate", broken, "--model", checkpoint, "--frames", FRAMES)
    assert failed.exit_code != 0
    assert_one_line_error("\n".join(line for line in failed.stderr.splitlines() if "warning" not in line),
                          "no readable video")


def test_the_store_is_replaced_atomically(cache, monkeypatch):
    thresholds.save_calibration("model-a", {"threshold": 0.55, "videos": 2, "frames": 8})
    before = (cache / "calibrations.json").read_text()

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(thresholds.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        thresholds.save_calibration("model-b", {"threshold": 0.7, "videos": 1, "frames": 8})
    assert (cache / "calibrations.json").read_text() == before
    assert sorted(os.listdir(cache)) == ["calibrations.json"]  # no temporary file left behind


def test_a_tiny_qwen2_vl_without_calibration_uses_the_authors_threshold(tiny_model_factory, cache):
    model, _ = tiny_model_factory("qwen2_vl")
    threshold = thresholds.resolve_threshold(model)
    assert (threshold.value, threshold.source) == (0.5, "family default")


def test_no_save_and_forget(videos, cache, tmp_path):
    checkpoint = save_tiny_checkpoint("qwen2_vl", tmp_path / "ckpt")
    printed = run("calibrate", videos / "clip0.mp4", "--model", checkpoint, "--frames", FRAMES, "--no-save", "--json")
    assert printed.exit_code == 0, printed.stderr
    assert single_json(printed.stdout)["store"] is None and not (cache / "calibrations.json").exists()
    assert run("calibrate", videos / "clip0.mp4", "--model", checkpoint, "--frames", FRAMES).exit_code == 0
    assert single_json(run("calibrate", "--show", "--model", checkpoint, "--json").stdout)["stored"] is not None
    forgotten = run("calibrate", "--forget", "--model", checkpoint)
    assert forgotten.exit_code == 0 and "removed the calibration" in forgotten.stderr
    shown = single_json(run("calibrate", "--show", "--model", checkpoint, "--json").stdout)
    assert shown["stored"] is None and shown["threshold"] == 0.5
