"""One patch stack per model: any method over any other behaves as on a fresh model, and removing it gives the
stock model back (parameters, forwards, hooks, outputs)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_random_clip

from framefusion import apply_method, last_stats, method_names, reduced, remove_framefusion, select_frames
from framefusion.core.patches import STACK_ATTRIBUTE, PatchStack
from framefusion.tiny import build_tiny_model
from framefusion.video.prompting import prepare_inputs

BUDGET = 0.3
QUESTION = "What is happening in the video?"


def fresh_model():
    """A newly built tiny Qwen2-VL (the same seed every time) and its processor."""
    return build_tiny_model("qwen2_vl", num_layers=6)


def run(model, processor, clip):
    """(greedy ids [1, prompt + 3], first-step logits, statistics dict or None) with whatever is installed."""
    inputs = prepare_inputs(processor, [clip], QUESTION)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    stats = last_stats(model)
    return out.sequences, out.logits[0], None if stats is None else stats.to_dict()


def instance_state(model):
    """Per module: its instance attributes that are not parameters, buffers or submodules, and its hooks."""
    state = {}
    for name, module in model.named_modules():
        plain = sorted(k for k in vars(module) if k not in ("_parameters", "_buffers", "_modules", "training")
                       and not k.startswith("_forward") and not k.startswith("_backward"))
        hooks = (len(module._forward_hooks), len(module._forward_pre_hooks))
        state[name] = (plain, hooks, "forward" in vars(module), "get_video_features" in vars(module))
    return state


@pytest.fixture(scope="module")
def setting():
    model, processor = fresh_model()
    clip = make_random_clip(8, static_fraction=0.5)
    stock_state = instance_state(model)
    alone = {}
    for name in method_names():  # each method on a fresh model
        fresh, _ = fresh_model()
        apply_method(fresh, name, BUDGET)
        chosen = select_frames(name, clip, BUDGET, fresh)
        alone[name] = (chosen, run(fresh, processor, chosen))
    return model, processor, clip, stock_state, alone


@pytest.mark.parametrize("first", method_names())
def test_any_method_over_any_other_is_that_method_on_a_fresh_model(first, setting):
    model, processor, clip, stock_state, alone = setting
    for second in method_names():
        apply_method(model, first, BUDGET)
        apply_method(model, second, BUDGET)
        try:
            chosen = select_frames(second, clip, BUDGET, model)
            ids, logits, stats = run(model, processor, chosen)
        finally:
            remove_framefusion(model)
        expected_clip, (expected_ids, expected_logits, expected_stats) = alone[second]
        assert chosen.num_frames == expected_clip.num_frames, (first, second)
        assert torch.equal(ids, expected_ids), (first, second)
        torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0, msg=f"{first} then {second}")
        assert stats == expected_stats, (first, second)
        assert instance_state(model) == stock_state, (first, second)


def test_remove_gives_back_the_stock_model(setting):
    model, processor, clip, stock_state, _ = setting
    stock, _ = fresh_model()
    expected = run(stock, processor, clip)
    parameters = {name: p.clone() for name, p in model.named_parameters()}
    for name in method_names():
        apply_method(model, name, BUDGET)
        run(model, processor, select_frames(name, clip, BUDGET, model))
        remove_framefusion(model)
        assert STACK_ATTRIBUTE not in vars(model) and last_stats(model) is None
        assert instance_state(model) == stock_state, name
        ids, logits, stats = run(model, processor, clip)
        assert stats is None and torch.equal(ids, expected[0]), name
        torch.testing.assert_close(logits, expected[1], rtol=0, atol=0)
    for name, p in model.named_parameters():
        assert torch.equal(p, parameters[name]) and torch.equal(p, stock.state_dict()[name]), name


def test_reduced_restores_the_model_when_the_body_raises(setting):
    model, processor, clip, stock_state, _ = setting
    with pytest.raises(RuntimeError, match="inside"):
        with reduced(model, "visionzip", BUDGET) as scope:
            run(model, processor, scope.select_frames(clip))
            assert scope.stats is not None and scope.stats.method == "visionzip"
            raise RuntimeError("inside the block")
    assert STACK_ATTRIBUTE not in vars(model) and instance_state(model) == stock_state
    with pytest.raises(KeyboardInterrupt):
        with reduced(model, "framefusion", BUDGET):
            raise KeyboardInterrupt
    assert STACK_ATTRIBUTE not in vars(model) and instance_state(model) == stock_state


def test_a_failed_install_leaves_the_stock_model(setting):
    model, _, _, stock_state, _ = setting
    with pytest.raises(ValueError, match="saliency"):
        apply_method(model, "visionzip", BUDGET, saliency="nonsense")
    assert STACK_ATTRIBUTE not in vars(model) and instance_state(model) == stock_state


def test_patch_stack_undoes_in_reverse_order_and_scopes_nest():
    class Box:
        def value(self):
            return "class"

    box, stack = Box(), PatchStack()
    stack.wrap_method(box, "value", lambda inner: lambda: inner() + "+a", "a")
    with stack.scope():
        stack.wrap_method(box, "value", lambda inner: lambda: inner() + "+b", "b")
        assert box.value() == "class+a+b" and stack.labels == ["a", "b"]
    assert box.value() == "class+a"
    stack.set_attribute(box, "extra", 1)
    stack.undo_to(0)
    assert box.value() == "class" and "value" not in vars(box) and not hasattr(box, "extra")


def test_ask_leaves_the_stock_model(setting):
    from framefusion.pipeline import ask
    from framefusion.pipeline.loading import LoadedModel

    model, processor, clip, stock_state, _ = setting
    result = ask(LoadedModel.of(model, processor), clip, QUESTION, method="holitom", max_new_tokens=2)
    assert result.stats.method == "holitom" and result.timings.vision_s > 0
    assert instance_state(model) == stock_state
