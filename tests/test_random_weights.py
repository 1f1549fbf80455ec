"""Real model shapes with random weights, built offline from shipped configs, directories or cached hub ids."""

from __future__ import annotations

import pytest
import torch
from conftest import make_random_clip

from framefusion.pipeline import ask
from framefusion.pipeline.loading import ModelLoadError, load_model
from framefusion.pipeline.random_weights import (
    CONFIGS,
    REFERENCES,
    parameter_count,
    read_reference_config,
    scaled_config,
    valid_width_scales,
)


@pytest.mark.parametrize("name", list(REFERENCES))
def test_every_shipped_config_scales_keeping_depth_and_head_size(name):
    config = read_reference_config(CONFIGS / name)
    scales = valid_width_scales(config)
    assert 1.0 in scales and scales[0] <= 0.5
    small = scaled_config(config, scales[0])
    text, small_text = config.get_text_config(), small.get_text_config()
    assert small_text.num_hidden_layers == text.num_hidden_layers
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert small_text.head_dim == head  # the head size is kept
    ratio = text.num_attention_heads / text.num_key_value_heads
    assert small_text.num_attention_heads / small_text.num_key_value_heads == ratio  # and the GQA ratio
    assert small_text.hidden_size == round(text.hidden_size * scales[0])
    assert 0 < parameter_count(small) < parameter_count(config)


def test_a_7b_shape_builds_at_a_quarter_width_and_answers(tiny_model_factory):
    loaded = load_model("qwen2-vl-7b", random_weights=True, width_scale=0.25, device="cpu")
    info = loaded.describe()
    assert info["weights"] == "random" and info["num_layers"] == 28 and info["width_scale"] == 0.25
    assert (info["hidden_size"], info["intermediate_size"], info["attention_heads"], info["kv_heads"],
            info["head_dim"]) == (896, 4736, 7, 1, 128)
    result = ask(loaded, make_random_clip(4, size=64, static_fraction=0.5), "What is this?", max_new_tokens=1)
    assert abs(result.kept_ratio - 0.3) <= 0.02 and len(result.tokens_per_layer) == 28


def test_a_model_directory_builds_with_random_weights():
    from framefusion.demo import demo_model_path

    trained = load_model("demo", device="cpu")
    random = load_model(str(demo_model_path()), device="cpu", random_weights=True, width_scale=1.0)
    assert random.describe()["num_layers"] == trained.describe()["num_layers"] and random.random_weights
    trained_weights, random_weights = trained.model.state_dict(), random.model.state_dict()
    assert trained_weights.keys() == random_weights.keys()
    assert not torch.equal(trained_weights["lm_head.weight"], random_weights["lm_head.weight"])  # not the saved ones


@pytest.mark.parametrize("kwargs, message", [
    ({"name_or_path": "qwen2-vl-7b"}, "reference shape without weights.*--random-weights.*Qwen/Qwen2-VL-7B-Instruct"),
    ({"name_or_path": "qwen2-vl-7b", "random_weights": True, "width_scale": 0.3}, "choose one of 0.25, 0.5"),
    ({"name_or_path": "nobody/nothing", "random_weights": True}, "no config for 'nobody/nothing'"),
    ({"name_or_path": "demo", "random_weights": True}, "needs a model shape"),
    ({"name_or_path": "demo", "width_scale": 0.5}, "--random-weights models only"),
])
def test_random_weight_requests_that_cannot_be_met_say_why(kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(device="cpu", **kwargs)
