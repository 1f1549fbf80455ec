"""The options the commands share: types, defaults, help texts and range checks."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import typer

from framefusion.methods import method_names

MAX_FRAMES = 256  # protects memory: more frames are refused (--frames) or subsampled (--fps)
DEFAULT_FRAMES = 16
DEFAULT_BUDGET = 0.3
DEFAULT_SIMILARITY = 0.6
DEFAULT_RATIO_LOWER_BOUND = 0.1
DEFAULT_MAX_NEW_TOKENS = 64

MODEL_PANEL, REDUCTION_PANEL, VIDEO_PANEL, OUTPUT_PANEL = "Model", "Token reduction", "Video", "Output"


# ---------------------------------------------------------------- range checks (typer callbacks)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def check_budget(value: float | list[float] | None) -> float | list[float] | None:
    """0 < budget <= 1 (each one, when repeated)."""
    for budget in value if isinstance(value, list) else [value] if value is not None else []:
        if not 0.0 < _finite(budget) <= 1.0:
            raise typer.BadParameter(f"must be in (0, 1], got {budget:g}")
    return value


def check_similarity(value: float | None) -> float | None:
    """-1 <= similarity (above 1 disables merging), or None for the model's calibrated or family default."""
    if value is not None and _finite(value) < -1.0:
        raise typer.BadParameter(f"must be at least -1 (a value above 1 disables merging), got {value:g}")
    return value


def check_ratio(value: float) -> float:
    """0 <= ratio lower bound <= 1."""
    if not 0.0 <= _finite(value) <= 1.0:
        raise typer.BadParameter(f"must be in [0, 1], got {value:g}")
    return value


def check_queries(value: int | None) -> int | None:
    """None (the family's default) or a count of at least 1."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1 (or left out for the model family's default), got {value}")
    return value


def check_frames(value: int | list[int] | None) -> int | list[int] | None:
    """1 <= frames <= MAX_FRAMES (each one, when repeated)."""
    for frames in value if isinstance(value, list) else [value] if value is not None else []:
        if not 1 <= frames <= MAX_FRAMES:
            raise typer.BadParameter(f"must be between 1 and {MAX_FRAMES} (a limit that protects memory), got {frames}")
    return value


def check_fps(value: float | None) -> float | None:
    """fps > 0."""
    if value is not None and not _finite(value) > 0:
        raise typer.BadParameter(f"must be positive, got {value:g}")
    return value


def check_positive(value: int | None) -> int | None:
    """A count of at least 1."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1, got {value}")
    return value


def check_width_scale(value: float | None) -> float | None:
    """0 < F <= 1."""
    if value is not None and not 0.0 < _finite(value) <= 1.0:
        raise typer.BadParameter(f"must be in (0, 1], got {value:g}")
    return value


def check_method(value: str | list[str] | None) -> str | list[str] | None:
    """A name from the method registry."""
    for name in value if isinstance(value, list) else [value] if value is not None else []:
        if name not in method_names():
            raise typer.BadParameter(f"unknown method {name!r}; choose from {', '.join(method_names())}")
    return value


# ---------------------------------------------------------------- option types

Model = Annotated[str, typer.Option(
    "--model", "-m", rich_help_panel=MODEL_PANEL,
    help="Hugging Face hub id (e.g. Qwen/Qwen2-VL-7B-Instruct), a local model directory, or 'demo' "
         "for the built-in demo model.")]
RandomWeights = Annotated[bool, typer.Option(
    "--random-weights", rich_help_panel=MODEL_PANEL,
    help="Build the model from its config with random weights (real shape, for timing; answers are noise). "
         "--model then takes a short name (qwen2-vl-7b, qwen2.5-vl-7b, qwen3-vl-8b, llava-onevision-7b, "
         "llava-video-7b (original LLaVA-NeXT format), llava-video-7b-hf, internvl3-8b, internvl2.5-8b, qwen3.5-0.8b, "
         "qwen3.5-9b, minicpm-v-4.6, minicpm-v-2.6, nvila-8b-video, nvila-lite-2b), a model directory or a cached "
         "hub id; nothing is downloaded.")]
WidthScale = Annotated[float | None, typer.Option(
    callback=lambda value: check_width_scale(value), metavar="F", rich_help_panel=MODEL_PANEL, show_default=False,
    help="With --random-weights: widths (hidden, FFN, head counts, vision width) times F, depth and head size "
         "kept (default: full size on a GPU that fits it, 0.25 or the nearest valid scale on a CPU).")]
ModelArgs = Annotated[list[str] | None, typer.Option(
    "--model-arg", metavar="KEY=VALUE", rich_help_panel=MODEL_PANEL, show_default=False,
    help="Override a config key of a checkpoint in its original format (repeatable), e.g. "
         "mm_newline_position=grid, mm_spatial_pool_mode=average or max_frames_num=64 for LLaVA-Video; "
         "the error for an unknown key lists the ones the format takes.")]
Device = Annotated[Literal["auto", "cuda", "cpu", "mps"], typer.Option(
    rich_help_panel=MODEL_PANEL, help="Where to run: auto picks cuda, then mps, then cpu.")]
Dtype = Annotated[Literal["auto", "bf16", "fp16", "fp32"], typer.Option(
    rich_help_panel=MODEL_PANEL,
    help="Weights dtype: auto is bf16 on CUDA (fp16 without bf16), fp16 on MPS, fp32 on CPU.")]
Attn = Annotated[Literal["sdpa", "eager", "flash_attention_2"], typer.Option(
    rich_help_panel=MODEL_PANEL, help="Attention implementation of the LLM.")]

Method = Annotated[str, typer.Option(
    "--method", callback=check_method, rich_help_panel=REDUCTION_PANEL,
    help="Token-reduction method: " + ", ".join(method_names()) + ".")]
Methods = Annotated[list[str] | None, typer.Option(
    "--method", callback=check_method, rich_help_panel=REDUCTION_PANEL,
    help="Method to run (repeatable; default: dense and framefusion). On one video dense always runs too, as the "
         "reference. Known: " + ", ".join(method_names()) + ".")]
Budget = Annotated[float, typer.Option(
    callback=check_budget, rich_help_panel=REDUCTION_PANEL,
    help="Cost C, 0 < b <= 1: mean over layers of vision tokens kept in the KV cache, relative to dense.")]
Budgets = Annotated[list[float] | None, typer.Option(
    "--budget", callback=check_budget, rich_help_panel=REDUCTION_PANEL,
    help="Budget to profile besides dense (repeatable; default 0.3).")]
Similarity = Annotated[float | None, typer.Option(
    callback=check_similarity, rich_help_panel=REDUCTION_PANEL, show_default=False,
    help="FrameFusion: cosine similarity at or above which a token merges into the same patch of the previous "
         "frame (>= -1; above 1 disables merging). Default: the model's stored calibration (framefusion "
         "calibrate), else its family's default.")]
RatioLowerBound = Annotated[float, typer.Option(
    callback=check_ratio, rich_help_panel=REDUCTION_PANEL,
    help="FrameFusion: merging ends when a step finds fewer than this share of tokens similar (0..1).")]

ImportanceQueries = Annotated[int | None, typer.Option(
    callback=check_queries, metavar="Q", rich_help_panel=REDUCTION_PANEL, show_default=False,
    help="FrameFusion: the prune step ranks video tokens by the attention of the prompt's last Q query rows "
         "(default: the model family's, 4 for Qwen-VL models and 1 for the others, as the authors' code).")]

Saliency = Annotated[Literal["attention", "norm"], typer.Option(
    rich_help_panel=REDUCTION_PANEL,
    help="VisionZip, FastVID, HoliTom: rank tokens by the vision encoder's attention (Qwen-VL, "
         "LLaVA-OneVision and InternVL2.5 original-format towers) or by the feature norm (norm: any family, as "
         "VidCom2's Qwen adaptation).")]

BudgetRule = Annotated[Literal["matched", "authors"], typer.Option(
    rich_help_panel=REDUCTION_PANEL,
    help="VidCom2, FastVID, VisionZip, EVS, HoliTom: matched keeps exactly round(budget * video tokens); authors "
         "follows the authors' own per-frame arithmetic (their published setting; the achieved budget is reported).")]

BudgetRule = Annotated[Literal["matched", "authors"], typer.Option(
    rich_help_panel=REDUCTION_PANEL,
    help="FlashVID: matched (kept_ratio = the budget, the pruning layer scaled to the depth) or authors (their "
         "retention arithmetic and absolute pruning layer; kept_ratio reports what that reaches).")]

Frames = Annotated[int | None, typer.Option(
    callback=check_frames, metavar="N", rich_help_panel=VIDEO_PANEL,
    help=f"Frames sampled uniformly in time (default {DEFAULT_FRAMES}, at most {MAX_FRAMES}).")]
FrameCounts = Annotated[list[int] | None, typer.Option(
    "--frames", callback=check_frames, metavar="N", rich_help_panel=VIDEO_PANEL,
    help=f"Frame count to profile (repeatable; default {DEFAULT_FRAMES}, at most {MAX_FRAMES}).")]
Fps = Annotated[float | None, typer.Option(
    callback=check_fps, metavar="F", rich_help_panel=VIDEO_PANEL,
    help=f"Sample F frames per second instead of a fixed count (at most {MAX_FRAMES} frames are kept).")]
Decoder = Annotated[Literal["av", "decord"], typer.Option(
    rich_help_panel=VIDEO_PANEL, help="Video decoder: PyAV or decord.")]
Questions = Annotated[list[str] | None, typer.Option(
    "--question", "-q", metavar="QUESTION", rich_help_panel=OUTPUT_PANEL, show_default=False,
    help="A question (repeatable): each is answered in turn about one decoding and vision encoding of the video.")]
History = Annotated[bool, typer.Option(
    "--history", rich_help_panel=OUTPUT_PANEL,
    help="Keep the conversation: each question sees the earlier questions and answers (default: each on its own).")]
MaxNewTokens = Annotated[int, typer.Option(
    callback=check_positive, rich_help_panel=OUTPUT_PANEL, help="Longest answer, in tokens (greedy decoding).")]
Json = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL, help="Print one JSON object on stdout instead of text for people.")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", rich_help_panel=OUTPUT_PANEL,
    help="Show library warnings, and the traceback when something fails.")]
