"""Fixtures and checks shared by the CLI, pipeline and profiling tests: a tiny checkpoint and short videos on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY_FAMILY = "qwen2_vl"
VIDEO_FRAMES = 8  # frames written to the test video; the commands sample all of them
VIDEO_SIZE = 64


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL saved with its processor, loadable offline with from_pretrained."""
    from framefusion.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(TINY_FAMILY, tmp_path_factory.mktemp("ckpt") / TINY_FAMILY)


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    """An 8-frame 64x64 mp4: a static textured top half over a moving bottom half (so some tokens merge)."""
    from framefusion.video import write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
    frames[:, : VIDEO_SIZE // 2] = frames[0, : VIDEO_SIZE // 2]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=4.0)


@pytest.fixture(scope="session")
def dataset_file(tmp_path_factory) -> Path:
    """A two-item synthetic multiple-choice JSONL dataset with its mp4s."""
    from framefusion.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("dataset"), 2, 0, split="test", num_frames=8, size=64)


def single_json(stdout: str) -> dict:
    """The one JSON object that must be all of stdout."""
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), f"expected one line of JSON, got {stdout!r}"
    payload = json.loads(stdout)
    assert isinstance(payload, dict)
    return payload


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr is one `framefusion: error:` line naming every fragment, and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("framefusion: error: "), lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


ASK_KEYS = {"answer", "answer_ids", "model", "method", "budget", "frames", "vision_tokens", "kept_ratio",
            "prefill_ratio", "importance_queries", "params", "tokens_per_layer", "timings", "peak_memory_bytes"}
CLI_ASK_KEYS = ASK_KEYS | {"startup_s", "model_info"}  # `ask --json` adds the process start-up and what was loaded
TIMING_KEYS = {"video_s", "processor_s", "vision_s", "prefill_s", "decode_s", "total_s"}
MODEL_KEYS = {"name", "family", "weights", "width_scale", "num_layers", "linear_attention_layers", "hidden_size",
              "intermediate_size", "attention_heads", "kv_heads", "head_dim", "vision_width", "parameters", "dtype",
              "device"}
AGREEMENT_KEYS = {"first_token_match", "kl_divergence", "exact_match"}
PROFILE_RUN_KEYS = {"method", "budget", "frames", "num_layers", "vision_tokens", "kept_ratio", "prefill_ratio",
                    "importance_queries", "video_s", "processor_s", "vision_s", "prefill_s",
                    "decode_per_token_s", "kv_cache_bytes", "peak_memory_bytes", "speedup_prefill",
                    "speedup_end_to_end", "ideal_speedup", "total_s", "new_tokens"}
VISUALIZE_FILES = ("merged_blank.png", "merged_mean.png", "tokens_per_layer.png", "contact_sheet.png")
