"""The framefusion command in-process (Typer's CliRunner) on a tiny local checkpoint and generated videos."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from cli_helpers import (  # noqa: F401
    AGREEMENT_KEYS,
    ASK_KEYS,
    CLI_ASK_KEYS,
    MODEL_KEYS,
    PROFILE_RUN_KEYS,
    TIMING_KEYS,
    VISUALIZE_FILES,
    assert_one_line_error,
    dataset_file,
    single_json,
    tiny_checkpoint,
    video_file,
)
from PIL import Image
from typer.testing import CliRunner

import framefusion.pipeline
import framefusion.pipeline.loading
from ffcli.errors import OneLineErrors
from ffcli.groups import SamplingOptions
from ffcli.main import app
from framefusion.pipeline.visualize import BLANK_RGB, HEADER

runner = CliRunner()
QUESTION = "What is happening?"


def run(*args: str, env: dict | None = None):
    env = {"COLUMNS": "200", **(env or {})}  # tables at a fixed width, whatever the terminal running the tests
    return runner.invoke(app, [str(a) for a in args], prog_name="framefusion", env=env)


@pytest.fixture(scope="module")
def model_args(tiny_checkpoint) -> list[str]:  # noqa: F811
    return ["--model", str(tiny_checkpoint), "--device", "cpu"]


# ---------------------------------------------------------------- help


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("ask", "compare", "profile", "visualize"):
        assert command in result.stdout


@pytest.mark.parametrize("command,extra", [
    ("ask", ["--max-new-tokens", "--fps"]),
    ("compare", ["--dataset", "--method"]),
    ("profile", ["--repeats", "--plot", "--warmup"]),
    ("visualize", ["--out", "--layer"]),
])
def test_command_help(command, extra):
    result = run(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for option in ["--model", "--method", "--budget", "--similarity", "--ratio-lower-bound", "--frames", "--device",
                   "--dtype", "--attn", "--json", "--verbose", *extra]:
        assert option in text, option


def test_command_descriptions_are_reflowed_paragraphs():
    """Typer prints a single line break of the help text as it stands: each paragraph must be one line."""
    commands = typer.main.get_command(app).commands
    assert sorted(commands) == ["ask", "calibrate", "chat", "compare", "profile", "visualize"]
    for name, command in commands.items():
        paragraphs = command.help.split("\n\n")
        assert all(paragraph and "\n" not in paragraph for paragraph in paragraphs), name
    assert len(commands["profile"].help.split("\n\n")) == 2  # summary, then what runs without --model


# ---------------------------------------------------------------- ask


def test_ask_streams_then_summarises(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTION, *model_args, "--max-new-tokens", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n")
    summary = result.stderr.strip().splitlines()[-1]
    for part in ("8 frames", "64 vision tokens", "kept", "prefill", "decode"):
        assert part in summary
    assert "prefill ran" not in summary  # FrameFusion's prefill runs what its cache keeps


def test_ask_summary_says_what_the_prefill_ran_when_the_cache_is_cut_later(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTION, *model_args, "--method", "dycoke", "--budget", "0.1",
                 "--max-new-tokens", "1", "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert payload["prefill_ratio"] > payload["kept_ratio"] + 0.1
    result = run("ask", video_file, QUESTION, *model_args, "--method", "dycoke", "--budget", "0.1",
                 "--max-new-tokens", "1")
    summary = result.stderr.strip().splitlines()[-1]
    assert f"kept_ratio {payload['kept_ratio']:.3f} (prefill ran {payload['prefill_ratio']:.3f})" in summary


def test_ask_json_is_one_object_with_the_documented_keys(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTION, *model_args, "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == CLI_ASK_KEYS and set(payload["timings"]) == TIMING_KEYS
    assert payload["method"] == "framefusion" and payload["budget"] == 0.3 and payload["frames"] == 8
    assert payload["vision_tokens"] == 64 and 0.2 < payload["kept_ratio"] < 0.4
    assert len(payload["tokens_per_layer"]) == 4 and payload["peak_memory_bytes"] > 0
    assert payload["importance_queries"] == 4  # the Qwen-VL family's default rule
    assert payload["params"] == {"similarity_lower_bound": 0.5, "ratio_lower_bound": 0.1, "importance_queries": None,
                                 "saliency": "attention", "budget_rule": "matched"}  # Qwen2-VL's threshold, the
    # authors' (no calibration stored)
    assert payload["similarity_threshold"] == 0.5 and payload["threshold_source"].startswith("family default")
    assert len(payload["answer_ids"]) == 2 and all(isinstance(i, int) for i in payload["answer_ids"])


def test_importance_queries_option_reaches_the_prune_step(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTION, *model_args, "--max-new-tokens", "1", "--json", "--similarity", "2",
                 "--importance-queries", "2")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert payload["importance_queries"] == 2 and payload["params"]["importance_queries"] == 2
    assert 0.28 < payload["kept_ratio"] < 0.32  # merging disabled: the budget is met by the prune step


@pytest.mark.decord
def test_ask_dense_with_decord_and_fps(model_args, video_file):  # noqa: F811
    result = run("ask", video_file, QUESTION, *model_args, "--method", "dense", "--decoder", "decord",
                 "--fps", "2", "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert payload["kept_ratio"] == 1.0 and payload["frames"] == 4  # 2 s at 2 fps
    assert len(set(payload["tokens_per_layer"])) == 1


@pytest.mark.parametrize("decoder", ["av", "decord"])
def test_ask_on_a_rotated_variable_frame_rate_video(decoder, model_args, tmp_path):
    from framefusion.video import write_video

    frames = np.random.default_rng(1).integers(0, 256, size=(12, 64, 96, 3), dtype=np.uint8)  # stored landscape
    times = np.cumsum([0.0] + [0.1, 0.3] * 5 + [0.1])  # gaps alternate: variable frame rate
    path = write_video(tmp_path / "vfr.mp4", frames, 10.0, timestamps=times, rotation=90)
    result = run("ask", path, QUESTION, *model_args, "--frames", "6", "--decoder", decoder, "--max-new-tokens",
                 "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert single_json(result.stdout)["frames"] == 6


def test_demo_model_is_announced(monkeypatch, tiny_checkpoint, video_file):  # noqa: F811
    monkeypatch.setattr(framefusion.pipeline.loading, "demo_model_directory", lambda: tiny_checkpoint)
    result = run("ask", video_file, QUESTION, "--device", "cpu", "--max-new-tokens", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert single_json(result.stdout)["model"] == "demo"
    assert "built-in demo model" in result.stderr and "--model Qwen/Qwen2-VL-7B-Instruct" in result.stderr
    assert "trained at" not in result.stderr  # the default 16 frames: nothing more to say


@pytest.mark.parametrize("sampling_args, expected", [
    (("--frames", "8"), "the demo model was trained at 16 frames per video; at 8 its answers are unreliable"),
    (("--fps", "2"), "with --fps the frame count follows the video's length"),
])
def test_demo_model_at_another_frame_count_is_flagged(monkeypatch, tiny_checkpoint, video_file,  # noqa: F811
                                                     sampling_args, expected):
    monkeypatch.setattr(framefusion.pipeline.loading, "demo_model_directory", lambda: tiny_checkpoint)
    result = run("ask", video_file, QUESTION, "--device", "cpu", "--max-new-tokens", "1", *sampling_args)
    assert result.exit_code == 0, result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr


# ---------------------------------------------------------------- compare


def test_compare_table(model_args, video_file):  # noqa: F811
    result = run("compare", video_file, QUESTION, *model_args, "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr
    for part in ("dense", "framefusion", "TTFT", "peak mem", "kept", "prefill", "KL", "same answer"):
        assert part in result.stdout


def test_compare_json(model_args, video_file):  # noqa: F811
    result = run("compare", video_file, QUESTION, *model_args, "--method", "framefusion", "--max-new-tokens", "2",
                 "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == {"results", "agreement", "video_s", "model"} and payload["video_s"] > 0
    assert [r["method"] for r in payload["results"]] == ["dense", "framefusion"]
    assert all(set(r) == ASK_KEYS for r in payload["results"])
    assert set(payload["agreement"]) == {"dense", "framefusion"}
    assert all(set(a) == AGREEMENT_KEYS for a in payload["agreement"].values())
    assert payload["agreement"]["dense"] == {"first_token_match": True, "kl_divergence": 0.0, "exact_match": True}


def test_compare_dataset(model_args, dataset_file):  # noqa: F811
    result = run("compare", "--dataset", dataset_file, *model_args, "--frames", "8", "--max-new-tokens", "2",
                 "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == {"dataset", "model", "frames", "scores"}
    assert [s["method"] for s in payload["scores"]] == ["dense", "framefusion"]
    for score in payload["scores"]:
        assert set(score) == {"method", "budget", "accuracy", "correct", "total", "kept_ratio", "per_task",
                              "importance_queries", "prefill_ratio", "similarity_threshold", "threshold_source"}
        assert score["total"] == 2 and 0.0 <= score["accuracy"] <= 1.0
    assert [s["importance_queries"] for s in payload["scores"]] == [None, 4]
    assert [s["similarity_threshold"] for s in payload["scores"]] == [None, 0.5]  # Qwen2-VL's, the authors' value
    table = run("compare", "--dataset", dataset_file, *model_args, "--frames", "8", "--max-new-tokens", "1",
                "--method", "dense")
    assert table.exit_code == 0 and "accuracy" in table.stdout


# ---------------------------------------------------------------- profile


def test_profile_json_and_plot(model_args, tmp_path):
    plot = tmp_path / "profile.png"
    result = run("profile", *model_args, "--size", "64", "--frames", "8", "--budget", "0.3", "--repeats", "1",
                 "--warmup", "0", "--max-new-tokens", "2", "--plot", plot, "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == {"model", "video", "runs"} and set(payload["model"]) == MODEL_KEYS
    assert [(r["method"], r["frames"]) for r in payload["runs"]] == [("dense", 8), ("framefusion", 8)]
    assert all(set(r) == PROFILE_RUN_KEYS for r in payload["runs"])
    assert payload["runs"][0]["speedup_prefill"] == 1.0 and payload["runs"][1]["ideal_speedup"] > 1.0
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width >= 600


def test_profile_table_on_a_video(model_args, video_file):  # noqa: F811
    result = run("profile", video_file, *model_args, "--frames", "4", "--repeats", "1", "--warmup", "0",
                 "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr
    for part in ("dense", "framefusion", "vision", "prefill", "KV cache", "ideal ×", "e2e ×"):
        assert part in result.stdout


# ---------------------------------------------------------------- visualize


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def test_visualize_writes_the_figures(model_args, video_file, tmp_path):  # noqa: F811
    out = tmp_path / "vis"
    result = run("visualize", video_file, *model_args, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert set(payload) == {"model", "method", "budget", "frames", "vision_tokens", "kept_ratio", "prefill_ratio",
                            "importance_queries", "params", "num_layers", "point", "files", "similarity_threshold",
                            "threshold_source"}
    assert [Path(p).name for p in payload["files"]] == list(VISUALIZE_FILES)
    for name in VISUALIZE_FILES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 200
    blank, mean, source = (_rgb(out / name)[HEADER:] for name in ("merged_blank.png", "merged_mean.png",
                                                                  "contact_sheet.png"))
    assert blank.shape == mean.shape == source.shape
    is_blank = lambda image: (image == np.array(BLANK_RGB)).all(-1).mean()  # noqa: E731
    assert is_blank(blank) > 0.05 > is_blank(source)  # merged tokens blanked
    assert (np.abs(mean - source).sum(-1) > 30).mean() > 0.05  # merged groups repainted with their mean


def test_visualize_at_a_layer(model_args, video_file, tmp_path):  # noqa: F811
    result = run("visualize", video_file, *model_args, "--out", tmp_path, "--layer", "3")
    assert result.exit_code == 0, result.stderr
    assert "reduction point 3" in result.stdout and (tmp_path / "merged_blank.png").is_file()


# ---------------------------------------------------------------- errors: one line, non-zero, no traceback


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, video_file) -> dict[str, Path]:  # noqa: F811
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video at all\n")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (folder / "a_directory").mkdir()
    (folder / "llama").mkdir()
    (folder / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return {"missing": folder / "missing.mp4", "empty": folder / "empty.mp4", "notes": folder / "notes.mp4",
            "corrupt": folder / "corrupt.mp4", "a_directory": folder / "a_directory", "llama": folder / "llama"}


@pytest.mark.parametrize("case,args,fragments", [
    ("missing file", ["ask", "{missing}", "q"], ["video not found"]),
    ("empty file", ["ask", "{empty}", "q"], ["empty"]),
    ("text file", ["ask", "{notes}", "q"], ["not a readable video"]),
    ("corrupt file", ["ask", "{corrupt}", "q"], ["not a readable video"]),
    ("directory", ["ask", "{a_directory}", "q"], ["directory"]),
    ("zero frames", ["ask", "{video}", "q", "--frames", "0"], ["--frames", "between 1 and 256"]),
    ("too many frames", ["ask", "{video}", "q", "--frames", "300"], ["--frames", "256"]),
    ("frames and fps", ["ask", "{video}", "q", "--frames", "4", "--fps", "2"], ["not both"]),
    ("negative fps", ["ask", "{video}", "q", "--fps", "-1"], ["--fps", "positive"]),
    ("budget zero", ["ask", "{video}", "q", "--budget", "0"], ["--budget", "(0, 1]"]),
    ("budget above one", ["compare", "{video}", "q", "--budget", "1.5"], ["--budget"]),
    ("profile budget", ["profile", "--budget", "0.3", "--budget", "2"], ["--budget"]),
    ("similarity", ["ask", "{video}", "q", "--similarity", "-3"], ["--similarity", "-1"]),
    ("ratio lower bound", ["visualize", "{video}", "--ratio-lower-bound", "1.5"], ["--ratio-lower-bound"]),
    ("importance queries", ["ask", "{video}", "q", "--importance-queries", "0"], ["--importance-queries", "at least 1"]),
    ("unknown method", ["ask", "{video}", "q", "--method", "magic"], ["unknown method 'magic'", "framefusion"]),
    ("url", ["ask", "https://example.com/v.mp4", "q"], ["https://example.com/v.mp4", "download the video first"]),
    ("unknown option", ["ask", "{video}", "q", "--colour"], ["No such option"]),
    ("missing question", ["ask", "{video}"], ["Missing argument"]),
    ("compare without input", ["compare"], ["--dataset"]),
    ("missing dataset", ["compare", "--dataset", "{missing}"], ["dataset file not found"]),
    ("layer too deep", ["visualize", "{video}", "--layer", "4"], ["--layer", "4 decoder layers"]),
    ("nothing to draw", ["visualize", "{video}", "--method", "dense"], ["no per-token reduction"]),
    ("profile frames over the video", ["profile", "{video}", "--frames", "16"], ["only 8 frames"]),
])
def test_bad_input_is_one_line(case, args, fragments, model_args, bad_files, video_file):  # noqa: F811
    names = {**{key: str(path) for key, path in bad_files.items()}, "video": str(video_file)}
    result = run(*[names[a[1:-1]] if a.startswith("{") else a for a in args], *model_args)
    assert result.exit_code != 0, case
    assert_one_line_error(result.stderr, *fragments)


@pytest.mark.parametrize("model,fragments", [
    ("nobody-here/no-such-model", ["hf download nobody-here/no-such-model", "local model directory"]),
    ("{a_directory}", ["no config.json"]),
    ("{llama}", ["'llama'", "supported families", "Qwen2-VL"]),
])
def test_bad_model_is_one_line(model, fragments, bad_files, video_file):  # noqa: F811
    model = str(bad_files[model[1:-1]]) if model.startswith("{") else model
    result = run("ask", video_file, "q", "--model", model, env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, *fragments)


def test_missing_demo_is_one_line(monkeypatch, video_file):  # noqa: F811
    monkeypatch.setitem(__import__("sys").modules, "framefusion.demo", None)
    result = run("ask", video_file, "q")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "demo model is not available", "--model")


@pytest.mark.parametrize("error,code,fragments", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), 1, ["out of memory", "--frames",
                                                                                   "--budget"]),
    (KeyboardInterrupt(), 130, ["interrupted"]),
    (RuntimeError("something odd\nsecond line"), 1, ["RuntimeError: something odd", "--verbose"]),
])
def test_runtime_failures_are_one_line(error, code, fragments, monkeypatch, model_args, video_file):  # noqa: F811
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(framefusion.pipeline, "ask", fail)
    result = run("ask", video_file, "q", *model_args)
    assert result.exit_code == code
    assert_one_line_error(result.stderr, *fragments)


@pytest.mark.parametrize("error,code", [(RuntimeError("boom"), 1), (KeyboardInterrupt(), 130)])
def test_verbose_shows_the_traceback(error, code, monkeypatch, model_args, video_file):  # noqa: F811
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(framefusion.pipeline, "ask", fail)
    result = run("ask", video_file, "q", *model_args, "--verbose")
    assert result.exit_code == code
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("framefusion: error:")


def test_ctrl_c_outside_a_command_body_still_prints_its_line(capsys):
    """Typer turns a KeyboardInterrupt it catches itself (outside reported_errors) into a silent exit 130."""
    app = typer.Typer(cls=OneLineErrors)

    @app.command()
    def interrupted():
        raise KeyboardInterrupt

    @app.command()
    def fine():
        pass

    with pytest.raises(SystemExit) as exited:
        app(["interrupted"])
    assert exited.value.code == 130
    assert_one_line_error(capsys.readouterr().err, "interrupted")


@pytest.fixture
def ctrl_c():
    """Press Ctrl-C in-process: ffcli's SIGINT handler, called as the signal would call it."""
    from ffcli import errors

    def press() -> None:
        errors._note_and_interrupt(signal.SIGINT, None)

    yield press
    errors.INTERRUPT_SEEN.clear()


@pytest.mark.parametrize("verbose", [False, True])
def test_an_error_raised_while_unwinding_a_ctrl_c_still_reads_interrupted(verbose, ctrl_c, monkeypatch, model_args,
                                                                          video_file):  # noqa: F811
    """A cleanup that fails on the way out of a Ctrl-C (an encoder closing a half-written file, say) replaces
    the KeyboardInterrupt with its own error; the user pressed Ctrl-C, so the line and the exit code say so."""
    def interrupted_then_cleanup_fails(*args, **kwargs):
        try:
            ctrl_c()
        finally:
            raise OSError("could not finish the file")  # noqa: B012 - the point of the test

    monkeypatch.setattr(framefusion.pipeline, "ask", interrupted_then_cleanup_fails)
    result = run("ask", video_file, "q", *model_args, *(["--verbose"] if verbose else []))
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == "framefusion: error: interrupted"
    if not verbose:
        assert_one_line_error(result.stderr, "interrupted")


def test_without_a_ctrl_c_the_same_error_is_reported(monkeypatch, model_args, video_file):  # noqa: F811
    def cleanup_fails(*args, **kwargs):
        raise OSError("could not finish the file")

    monkeypatch.setattr(framefusion.pipeline, "ask", cleanup_fails)
    result = run("ask", video_file, "q", *model_args)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "could not finish the file")


# ---------------------------------------------------------------- decoding progress


def test_decoding_progress_appears_only_after_a_second():
    import io

    from rich.console import Console

    from ffcli.render import DelayedProgress

    now = [0.0]
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    with DelayedProgress(console, "Decoding clip.mp4", delay=1.0, clock=lambda: now[0]) as bar:
        now[0] = 0.6
        bar.update(10, 100)
        assert bar.bar is None  # quick work: no bar at all
        now[0] = 1.2
        bar.update(40, 100)
        assert bar.bar is not None and bar.bar.tasks[0].completed == 40
        bar.update(100, 100)
    assert "Decoding clip.mp4" in output.getvalue()


def test_read_clip_reports_decoding_progress(video_file, monkeypatch):  # noqa: F811
    from ffcli import render, session

    updates = []
    monkeypatch.setattr(render.DelayedProgress, "update", lambda self, done, total: updates.append((done, total)))
    clip = session.read_clip(str(video_file), SamplingOptions(frames=8, fps=None, decoder="av"))
    assert clip.num_frames == 8 and updates and updates[-1][0] == updates[-1][1]  # ends complete


# ---------------------------------------------------------------- the newer methods through every command


@pytest.mark.parametrize("method", ["visionzip", "fastvid", "holitom", "dycoke", "flashvid"])
def test_each_newer_method_runs_through_every_command(method, model_args, video_file, tmp_path):  # noqa: F811
    asked = run("ask", video_file, QUESTION, *model_args, "--method", method, "--max-new-tokens", "2", "--json")
    assert asked.exit_code == 0, asked.stderr
    asked = single_json(asked.stdout)
    assert asked["method"] == method and abs(asked["kept_ratio"] - 0.3) <= 0.05, asked["kept_ratio"]
    compared = run("compare", video_file, QUESTION, *model_args, "--method", method, "--max-new-tokens", "1",
                   "--json")
    assert compared.exit_code == 0, compared.stderr
    results = single_json(compared.stdout)["results"]
    assert [r["method"] for r in results] == ["dense", method] and results[1]["kept_ratio"] == asked["kept_ratio"]
    profiled = run("profile", video_file, *model_args, "--method", method, "--frames", "8", "--repeats", "1",
                   "--warmup", "0", "--max-new-tokens", "2", "--json")
    assert profiled.exit_code == 0, profiled.stderr
    runs = single_json(profiled.stdout)["runs"]
    assert [r["method"] for r in runs] == ["dense", method] and runs[1]["kv_cache_bytes"] < runs[0]["kv_cache_bytes"]
    drawn = run("visualize", video_file, *model_args, "--method", method, "--out", tmp_path, "--json")
    assert drawn.exit_code == 0, drawn.stderr
    drawn = single_json(drawn.stdout)
    assert drawn["method"] == method and [Path(p).name for p in drawn["files"]] == list(VISUALIZE_FILES)


# ---------------------------------------------------------------- hybrid decoders through every command


@pytest.fixture(scope="module", params=["qwen3_5", "minicpmv4_6"])
def hybrid_checkpoint(request, tmp_path_factory):
    from framefusion.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(request.param, tmp_path_factory.mktemp("hybrid") / request.param, num_layers=16)


def test_every_command_runs_on_a_hybrid_decoder(hybrid_checkpoint, video_file, tmp_path):  # noqa: F811
    model = ["--model", str(hybrid_checkpoint), "--device", "cpu"]
    asked = single_json(run("ask", video_file, QUESTION, *model, "--max-new-tokens", "2", "--json").stdout)
    assert abs(asked["kept_ratio"] - 0.3) <= 0.05 and len(asked["tokens_per_layer"]) == 16
    compared = run("compare", video_file, QUESTION, *model, "--method", "framefusion", "--method", "fastv",
                   "--method", "vidcom2", "--method", "evs", "--max-new-tokens", "1", "--json")
    assert compared.exit_code == 0, compared.stderr
    results = single_json(compared.stdout)["results"]
    assert [r["method"] for r in results] == ["dense", "framefusion", "fastv", "vidcom2", "evs"]
    assert all(abs(r["kept_ratio"] - 0.3) <= 0.05 for r in results[1:]), [r["kept_ratio"] for r in results]
    profiled = run("profile", video_file, *model, "--frames", "8", "--repeats", "1", "--warmup", "0",
                   "--max-new-tokens", "2", "--json")
    assert profiled.exit_code == 0, profiled.stderr
    runs = single_json(profiled.stdout)["runs"]
    assert runs[1]["ideal_speedup"] > 1.0
    drawn = run("visualize", video_file, *model, "--out", tmp_path, "--json")
    assert drawn.exit_code == 0 and len(single_json(drawn.stdout)["files"]) == 4
    refused = run("ask", video_file, QUESTION, *model, "--method", "streamingllm")
    assert refused.exit_code != 0
    assert_one_line_error(refused.stderr, "streamingllm is not defined", "linear-attention layers")


# ---------------------------------------------------------------- random weights, real shapes


def test_profile_a_reference_shape_with_random_weights():
    result = run("profile", "--model", "qwen2-vl-7b", "--random-weights", "--width-scale", "0.25", "--device", "cpu",
                 "--size", "64", "--frames", "4", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    model = payload["model"]
    assert set(model) == MODEL_KEYS and model["weights"] == "random" and model["width_scale"] == 0.25
    assert (model["num_layers"], model["hidden_size"], model["intermediate_size"]) == (28, 896, 4736)
    assert all(r["num_layers"] == 28 for r in payload["runs"]) and payload["video"] == "generated"
    assert "qwen2-vl-7b with random weights" in result.stderr and "28 layers" in result.stderr


def test_profile_without_a_model_builds_the_default_shape_with_random_weights(monkeypatch, tiny_checkpoint):  # noqa: F811
    from ffcli import profile

    monkeypatch.setattr(profile, "DEFAULT_MODEL", str(tiny_checkpoint))  # a small shape: the default's path, quickly
    result = run("profile", "--device", "cpu", "--size", "64", "--frames", "4", "--repeats", "1", "--warmup", "0",
                 "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert single_json(result.stdout)["model"]["weights"] == "random"
    assert "with random weights (timing only" in result.stderr
