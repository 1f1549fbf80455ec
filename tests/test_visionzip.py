"""VisionZip: the per-frame selection and merge against the slow reference, and end to end on the families."""

from __future__ import annotations

import pytest
import torch
from conftest import generate_reduced, make_random_clip
from reference_visionzip import reference_visionzip

from framefusion.core.stats import MERGED
from framefusion.methods import apply_method
from framefusion.methods.visionzip import stride_targets, visionzip_video
from framefusion.video.prompting import prepare_inputs


@pytest.mark.parametrize("frames, patches", [(1, 16), (4, 16), (6, 9), (3, 64)])
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3, 0.7])
def test_fast_path_equals_the_reference(frames, patches, budget):
    torch.manual_seed(frames * patches)
    features = torch.randn(frames, patches, 12)
    saliency = torch.rand(frames, patches)
    got = visionzip_video(features, budget, saliency)
    keep, out, merged_into = reference_visionzip(features, budget, saliency)
    assert torch.equal(got.keep, keep) and torch.equal(got.merged_into, merged_into)
    torch.testing.assert_close(got.features[keep], out[keep].float(), atol=1e-5, rtol=1e-5)
    assert int(got.keep.sum()) == max(frames, round(budget * frames * patches))


def test_stride_targets_take_every_step_th_remaining_token():
    assert stride_targets(torch.arange(10, 20), 3).tolist() == [10, 13, 16]
    assert stride_targets(torch.arange(5), 8).tolist() == [0, 1, 2, 3, 4]
    assert stride_targets(torch.arange(5), 0).tolist() == []


def test_contextual_token_adds_the_mean_of_its_members_to_itself():
    features = torch.tensor([[[10.0, 0.0], [1.0, 0.0], [3.0, 0.1], [0.0, 1.0]]])  # one frame, 4 tokens
    saliency = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    got = visionzip_video(features, 0.5, saliency)  # 2 kept: 1 dominant (token 0) + 1 contextual (token 1)
    assert got.keep.tolist() == [True, True, False, False]
    torch.testing.assert_close(got.features[1], torch.tensor([1.0 + 1.5, 0.0 + 0.55]))
    assert got.merged_into.tolist() == [-1, -1, 1, 1]


@pytest.mark.parametrize("family, saliency", [("qwen2_vl", "attention"), ("qwen3_vl", "attention"),
                                              ("llava_onevision", "attention"), ("internvl", "norm"),
                                              ("qwen3_5", "attention")])
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.3])
def test_visionzip_end_to_end(family, saliency, budget, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=8)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], "What is happening?")
    out, stats = generate_reduced(model, inputs, 2, "visionzip", budget, saliency=saliency)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert abs(stats.kept_ratio - budget) <= 0.05
    merged = stats.removed_by == MERGED
    assert merged.any() and (stats.removed_at[merged] == 0).all()


def test_families_without_vision_attention_need_the_norm(tiny_model_factory):
    model, _ = tiny_model_factory("internvl")
    with pytest.raises(ValueError, match="saliency='norm'"):
        apply_method(model, "visionzip", 0.25)
