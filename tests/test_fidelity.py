"""budget_rule="authors" against the authors' code, through the outputs recorded by benchmarks/against_authors/
(no oracle venv needed): VidCom2 (Qwen2-VL) and FastVID (Qwen2.5-VL) end to end, token for token and greedy id for
greedy id; EVS, VisionZip, HoliTom and DyCoke on the recorded selection inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from framefusion.methods import apply_method
from framefusion.methods.dycoke import ttm_keep
from framefusion.methods.evs import evs_retention_mask
from framefusion.methods.fastvid import FastVIDConfig, authors_frame_counts
from framefusion.methods.holitom import HoliTomConfig, holitom_video
from framefusion.methods.vidcom2 import vidcom2_video_mask
from framefusion.methods.visionzip import visionzip_video

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "against_authors"
SELECTION = HARNESS / "selection" / "recorded"


@pytest.fixture(scope="module")
def selection():
    """(inputs, the authors' recorded outputs) of the selection harness."""
    return torch.load(SELECTION / "inputs.pt"), torch.load(SELECTION / "theirs.pt")


def test_budget_rule_is_validated():
    with pytest.raises(ValueError, match="budget_rule"):
        apply_method(torch.nn.Linear(1, 1), "vidcom2", 0.3, budget_rule="theirs")  # refused before the model is read


def test_vidcom2_authors_rounds_each_frame():
    """At R = 0.25 on 8 frames of 16 tokens the authors' per-frame rounding keeps more than the matched 32."""
    torch.manual_seed(3)
    features = torch.randn(8, 16, 32)
    features[3] += 4.0  # one distinctive frame: its rate is R * (1 + p - mean p) > R
    matched = vidcom2_video_mask(features, 0.25)
    authors = vidcom2_video_mask(features, 0.25, "authors")
    assert int(matched.sum()) == 32 and int(authors.sum()) > 32


@pytest.mark.parametrize("name", ["qwen2vl", "synthetic"])
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3, 0.5])
def test_evs_authors_equals_vllm(selection, name, budget):
    inputs, theirs = selection
    features, _ = inputs[name]
    keep = evs_retention_mask(features, budget, "authors")
    assert torch.nonzero(keep).flatten().tolist() == theirs[f"{name}|evs|{budget}"].tolist()


def _tokens_match(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Same number of tokens, each of theirs equal (1e-5) to one of ours."""
    if ours.shape != theirs.shape:
        return False
    nearest = (theirs[:, None, :] - ours[None, :, :]).abs().amax(-1).min(dim=1).values
    return bool((nearest < 1e-5).all())


@pytest.mark.parametrize("name", ["qwen2vl", "synthetic"])
@pytest.mark.parametrize("budget", [0.1, 0.3])
def test_visionzip_authors_equals_holitom_port(selection, name, budget):
    inputs, theirs = selection
    features, saliency = inputs[name]
    selection_ = visionzip_video(features, budget, saliency, "authors")
    ours = selection_.features.reshape(-1, features.shape[-1])[torch.nonzero(selection_.keep).flatten()]
    recorded = theirs[f"{name}|visionzip/given|{budget}"]
    flat = features.reshape(-1, features.shape[-1])
    assert _tokens_match(ours, torch.cat([flat[recorded["dominant"].long()], recorded["contextual"].reshape(-1, flat.shape[1])]))


@pytest.mark.parametrize("name", ["qwen2vl", "synthetic"])
@pytest.mark.parametrize("budget", [0.1, 0.3])
def test_holitom_authors_equals_their_outer_stage(selection, name, budget):
    inputs, theirs = selection
    features, saliency = inputs[name]
    selection_ = holitom_video(features, budget, saliency, HoliTomConfig(), "authors")
    ours = selection_.features.reshape(-1, features.shape[-1])[torch.nonzero(selection_.keep).flatten()].float()
    assert _tokens_match(ours, theirs[f"{name}|holitom|{budget}"])
    matched = holitom_video(features, budget, saliency, HoliTomConfig())
    assert int(matched.keep.sum()) == round(budget * features.shape[0] * features.shape[1])


def test_dycoke_ttm_differs_only_in_the_last_window(selection):
    """On the synthetic input (no exact ties) ours keeps a subset of their tokens: they leave the last window's
    third frame (frame 6 of 8) whole."""
    inputs, theirs = selection
    features, _ = inputs["synthetic"]
    ours = set(torch.nonzero(ttm_keep(features, int(0.3 * features.shape[1]))).flatten().tolist())
    recorded = set(theirs["synthetic|dycoke|None"].tolist())
    patches = features.shape[1]
    assert ours <= recorded and {i // patches for i in recorded - ours} == {6}


def test_fastvid_authors_counts_one_frame_segments():
    """Single-frame segments at R = 0.25: int(16 R) = 4 tokens a frame, 1 of them context (max(int(4 d), 1))."""
    torch.manual_seed(0)
    salient, context, lengths = authors_frame_counts(torch.randn(8, 16, 32), 16, 0.25, FastVIDConfig(cut_threshold=0.84))
    assert lengths == [1] * 8 and salient.tolist() == [3] * 8 and context.tolist() == [1] * 8
    with pytest.raises(ValueError, match="int\\(16 \\* 0.05\\) = 0"):
        authors_frame_counts(torch.randn(8, 16, 32), 16, 0.05, FastVIDConfig())


def _end_to_end(tmp_path, family: str, method: str, recorded: Path, budgets: list[float]):
    """Our ask() with budget_rule="authors" on the harness's tiny checkpoint and clip, against their recorded run."""
    sys.path.insert(0, str(HARNESS / "qwen_e2e"))
    import ours as harness

    from framefusion.pipeline.loading import load_model

    ckpt, clip = harness.write_inputs(tmp_path, family)
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32")
    theirs = {r["budget"]: r for r in json.loads(recorded.read_text())["theirs"]["runs"]}
    for budget in budgets:
        record, _ = harness.run_api(loaded, clip, method, budget, "authors")
        assert record["kept"] == theirs[budget]["kept"], budget
        assert record["answer_ids"] == theirs[budget]["answer_ids"], budget


@pytest.mark.slow
def test_vidcom2_authors_equals_their_qwen2_vl_code(tmp_path):
    _end_to_end(tmp_path, "qwen2_vl", "vidcom2", HARNESS / "vidcom2" / "recorded" / "results.json", [0.25, 0.3])


@pytest.mark.slow
def test_fastvid_authors_equals_their_qwen2_5_vl_code(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_FRAMES", "32")
    sys.modules.pop("ours", None)  # FRAMES is read at import
    try:
        _end_to_end(tmp_path, "qwen2_5_vl", "fastvid", HARNESS / "fastvid" / "recorded" / "frames32.json", [0.25, 0.5])
    finally:
        sys.modules.pop("ours", None)
