"""`calibrate`: FrameFusion's similarity threshold for any model, by the paper's rule.

The paper sets S_threshold "to match the median of similarity at the first model layer under typical input
cases"; the authors spell it out (thu-nics/FrameFusion issue 13): the median similarity at the first layer for
each sampled video, then the mean of these medians. The similarity is the one the merge step thresholds: for each
video token, the cosine similarity of its state with the same patch of the previous frame, at the family's first
merge point (the input of the first decoder layer, where the authors' code first merges). The result is stored
per model (methods/framefusion/thresholds.py) and used by later runs unless a threshold is given.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from framefusion.core.contract import Reducer
from framefusion.core.layout import TokenLayout
from framefusion.core.merge import chain_order, predecessor_similarity
from framefusion.methods.framefusion.thresholds import model_fingerprint, save_calibration, stored_calibration
from framefusion.methods.install import install_method, remove_reduction
from framefusion.pipeline.answer import model_inputs
from framefusion.pipeline.loading import LoadedModel
from framefusion.video import Sampling, VideoClip, VideoError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".wmv", ".mpeg", ".mpg", ".ts")
PROMPT = "Describe the video."  # the first layer's input holds no question yet: any prompt gives the same states


class CalibrationError(ValueError):
    """Nothing to calibrate on: no readable video, or a model that takes no video."""


@dataclass
class VideoSimilarity:
    """The first-layer similarities of one video."""

    video: str
    frames: int
    similarities: torch.Tensor = field(repr=False)  # [n] float32, one per video token that has a previous frame

    @property
    def median(self) -> float:
        """The median similarity (the mean of the two middle values for an even count)."""
        return float(torch.quantile(self.similarities.double(), 0.5))


@dataclass
class Calibration:
    """The threshold a calibration found, from which videos, and what was skipped."""

    model: str
    fingerprint: str
    frames: int
    videos: list[VideoSimilarity]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video, why)

    @property
    def threshold(self) -> float:
        """The mean over videos of the per-video median similarity."""
        return sum(video.median for video in self.videos) / len(self.videos)

    def record(self) -> dict[str, Any]:
        """What the store keeps for the model."""
        return {"model": self.model, "threshold": self.threshold, "videos": len(self.videos), "frames": self.frames,
                "medians": {video.video: video.median for video in self.videos},
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def to_json(self) -> dict[str, Any]:
        """The JSON object `framefusion calibrate --json` prints."""
        return {"model": self.model, "fingerprint": self.fingerprint, "threshold": self.threshold,
                "frames": self.frames,
                "videos": [{"video": v.video, "frames": v.frames, "tokens": int(v.similarities.numel()),
                            "median": v.median} for v in self.videos],
                "skipped": [{"video": video, "reason": why} for video, why in self.skipped]}


class _Measured(Exception):
    """Stops the forward once the first layer's input has been measured."""

    def __init__(self, similarities: torch.Tensor):
        super().__init__("measured")
        self.similarities = similarities


class _FirstLayerProbe(Reducer):
    """A reducer that only measures the merge similarity at point 0 (the first decoder layer's input) and ends
    the forward there: no decoder layer runs."""

    def __init__(self, layout: TokenLayout, _stack, device: torch.device):
        self.layout = layout
        self.alive = torch.arange(layout.seq_len, device=device)
        self.version = 0
        self.finished = False

    def prunes_at(self, point: int) -> bool:
        """Never: nothing is ranked."""
        return False

    def step(self, point: int, hidden: torch.Tensor, attention=None) -> torch.Tensor:
        """Measure at point 0 and stop the forward."""
        layout = self.layout
        chain = chain_order(layout.video, layout.patch).to(hidden.device)  # (video, patch) chains, time order
        key = (layout.video * (int(layout.patch.max()) + 1) + layout.patch).to(hidden.device)
        rows = layout.positions.to(hidden.device)[chain]
        similarity = predecessor_similarity(hidden[0, rows], key[chain])
        raise _Measured(similarity[torch.isfinite(similarity)].cpu())

    def stats(self):
        """No prefill completes under this probe."""
        raise RuntimeError("the calibration probe records no statistics")


def first_layer_similarities(loaded: LoadedModel, clip: VideoClip) -> torch.Tensor:
    """[n] cosine similarity of each video token of the clip with the same patch of the previous frame, at the
    input of the first decoder layer (CalibrationError when the prompt holds no video tokens)."""
    model = loaded.model
    inputs = model_inputs(loaded, [clip], PROMPT)
    # FrameFusion's own token layout (what its merge step thresholds; MiniCPM-V 2.6 reads frames differently for it)
    install_method(model, "calibration probe", lambda _patches: _FirstLayerProbe, "framefusion")
    try:
        with torch.inference_mode():
            model(**inputs)
    except _Measured as measured:
        return measured.similarities
    finally:
        remove_reduction(model)
    raise CalibrationError(f"{loaded.name} saw no video tokens in a video prompt: it takes no video")


def video_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files given, with every video file (by suffix) directly inside each folder given, sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            files.append(path)
    return files


def calibrate(loaded: LoadedModel, videos: Sequence[str | Path | VideoClip], sampling: Sampling | None = None, *,
              save: bool = True, on_video: Callable[[int, int, str], None] | None = None,
              on_skip: Callable[[str, str], None] | None = None) -> Calibration:
    """Measure the paper's threshold for `loaded` on `videos` (files, or sampled clips) and store it for the model.

    Each video is sampled by `sampling` (default 16 frames). An unreadable video is skipped (on_skip(name, why));
    CalibrationError when none is readable. on_video(done, total, name) reports progress.
    """
    sampling = sampling or Sampling()
    measured: list[VideoSimilarity] = []
    skipped: list[tuple[str, str]] = []
    for index, video in enumerate(videos):
        name = (video.source or f"clip {index + 1}") if isinstance(video, VideoClip) else str(video)
        try:
            clip = video if isinstance(video, VideoClip) else sampling.load(video)
        except (VideoError, OSError, ValueError) as error:
            skipped.append((name, str(error)))
            if on_skip is not None:
                on_skip(name, str(error))
        else:
            similarities = first_layer_similarities(loaded, clip)
            if similarities.numel() == 0:
                skipped.append((name, "a single frame: no token has a previous frame to compare with"))
                if on_skip is not None:
                    on_skip(name, skipped[-1][1])
            else:
                measured.append(VideoSimilarity(name, clip.num_frames, similarities))
        if on_video is not None:
            on_video(index + 1, len(videos), name)
    if not measured:
        raise CalibrationError("no readable video to calibrate on" + (f" ({len(skipped)} skipped)" if skipped else ""))
    frames = measured[0].frames
    result = Calibration(loaded.name, model_fingerprint(loaded.model), frames, measured, skipped)
    if save:
        save_calibration(result.fingerprint, result.record())
    return result


def shown_calibration(loaded: LoadedModel) -> dict[str, Any] | None:
    """The calibration stored for the loaded model, or None."""
    return stored_calibration(loaded.model)


def plot_similarities(calibration: Calibration, path: str | Path) -> Path:
    """A histogram of every video token's first-layer similarity, with the threshold marked (like the paper's
    Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    values = torch.cat([video.similarities for video in calibration.videos]).numpy()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(values, bins=50, range=(min(-0.1, float(values.min())), 1.0), color="#4c72b0")
    axis.axvline(calibration.threshold, color="#c44e52", linestyle="--",
                 label=f"threshold {calibration.threshold:.6g} (mean of per-video medians)")
    axis.set_xlabel("cosine similarity with the same patch of the previous frame (first layer input)")
    axis.set_ylabel("video tokens")
    axis.set_title(f"{calibration.model}: {len(calibration.videos)} videos, {calibration.frames} frames")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
