"""The published Qwen2-VL / Qwen2.5-VL M-RoPE rule (core/positions.py) against a slow, obviously correct reference:
every token's (t, h, w) position written out one by one, as the original Qwen code and transformers 4.x do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_random_clip

from framefusion import apply_method, remove_framefusion
from framefusion.adapters import adapter_for
from framefusion.core.positions import published_positions, vision_runs
from framefusion.video.prompting import prepare_inputs

QUESTION = "What happens?"


def reference_positions(input_ids, attention_mask, grids, merge, intervals, vision_ids):
    """Positions [3, N] of one row as published: text continues at the last block's largest position + 1.

    grids: (t, h, w) of each vision block in prompt order; intervals: temporal position step of each block.
    Padded positions are left at 0 (masked everywhere). Also returns the next position after the prompt.
    """
    ids = input_ids.tolist()
    keep = [True] * len(ids) if attention_mask is None else [bool(v) for v in attention_mask.tolist()]
    positions = [[0, 0, 0] for _ in ids]
    attended = [i for i in range(len(ids)) if keep[i]]
    blocks = iter(zip(grids, intervals))
    current, k = 0, 0
    while k < len(attended):
        index = attended[k]
        if ids[index] in vision_ids:
            (t, h, w), interval = next(blocks)
            largest = current
            for ti in range(t):
                for hi in range(h // merge):
                    for wi in range(w // merge):
                        position = (current + int(ti * interval), current + hi, current + wi)
                        positions[attended[k]] = list(position)
                        largest = max(largest, *position)
                        k += 1
            current = largest + 1
        else:
            positions[index] = [current] * 3
            current += 1
            k += 1
    return torch.tensor(positions).T, current


def block_grids(model, inputs):
    """(t, h, w) and temporal step of every vision block of a batch-1 prompt, in prompt order."""
    config = model.config
    ids = inputs["input_ids"][0]
    images = iter(inputs.get("image_grid_thw", torch.zeros(0, 3)).tolist())
    videos = iter(inputs.get("video_grid_thw", torch.zeros(0, 3)).tolist())
    seconds = inputs.get("second_per_grid_ts")
    seconds = iter(seconds.tolist() if seconds is not None else [1.0] * 64)
    tokens_per_second = getattr(config.vision_config, "tokens_per_second", None)
    grids, intervals = [], []
    for start, _end in vision_runs(ids, (config.image_token_id, config.video_token_id)):
        if int(ids[start]) == config.image_token_id:
            grids.append(next(images))
            intervals.append(1.0)
        else:
            grids.append(next(videos))
            step = next(seconds)
            intervals.append(step * tokens_per_second if tokens_per_second is not None else 1.0)
    return grids, intervals


def rope_index(model, inputs):
    """position_ids [3, 1, N] and rope_deltas of the model's get_rope_index as it stands."""
    module = adapter_for(model).multimodal_module(model)
    keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts",
            "attention_mask")
    import inspect

    accepted = inspect.signature(module.get_rope_index).parameters
    return module.get_rope_index(**{k: inputs[k] for k in keys if k in inputs and k in accepted})


def prompt(processor, frames=(8,), size=64, image=False, seed=0):
    clips = [make_random_clip(n, size=size, seed=seed + i) for i, n in enumerate(frames)]
    images = [np.zeros((56, 84, 3), np.uint8)] if image else None
    return prepare_inputs(processor, clips, QUESTION, images=images)


CASES = {  # name: prompt arguments (tiny Qwen-VL: 16 x 16 patch side at 64 px, merge 2 -> 2 x 2 tokens per frame)
    "t above h": dict(frames=(16,)),
    "t below h": dict(frames=(2,), size=112),
    "two videos": dict(frames=(8, 16)),
    "image and video": dict(frames=(12,), image=True),
}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("case", list(CASES))
def test_dense_positions_follow_the_published_rule(family, case, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    inputs = prompt(processor, **CASES[case])
    merge = model.config.vision_config.spatial_merge_size
    grids, intervals = block_grids(model, inputs)
    expected, next_position = reference_positions(inputs["input_ids"][0], None, grids, merge, intervals,
                                                  (model.config.image_token_id, model.config.video_token_id))
    stock, _ = rope_index(model, inputs)
    apply_method(model, "dense")
    try:
        positions, deltas = rope_index(model, inputs)
    finally:
        remove_framefusion(model)
    assert torch.equal(positions[:, 0], expected), case
    assert int(deltas[0, 0]) + inputs["input_ids"].shape[1] == next_position  # decoding continues there
    if case == "t below h":
        assert torch.equal(stock, positions)  # both rules agree here
    if case == "t above h":
        assert not torch.equal(stock, positions)  # transformers 5.x departs here (the reason for all this)
    after, _ = rope_index(model, inputs)
    assert torch.equal(after, stock)  # remove_framefusion gives back the stock rule


def test_left_padding_and_a_batch(tiny_model_factory):
    """A batch of two prompts, the shorter left-padded: each row follows the rule on its own tokens."""
    model, processor = tiny_model_factory("qwen2_vl")
    clips = [make_random_clip(16, seed=1), make_random_clip(4, seed=2)]
    texts = []
    for clip in clips:
        single = prepare_inputs(processor, [clip], QUESTION)
        texts.append(single)
    width = max(t["input_ids"].shape[1] for t in texts)
    pad = processor.tokenizer.pad_token_id
    rows, masks = [], []
    for single in texts:
        missing = width - single["input_ids"].shape[1]
        rows.append(torch.cat([torch.full((1, missing), pad), single["input_ids"]], dim=1))
        masks.append(torch.cat([torch.zeros(1, missing, dtype=torch.long), single["attention_mask"]], dim=1))
    types = [torch.cat([torch.zeros(1, width - t["input_ids"].shape[1], dtype=t["mm_token_type_ids"].dtype),
                        t["mm_token_type_ids"]], dim=1) for t in texts]
    batch = {"input_ids": torch.cat(rows), "attention_mask": torch.cat(masks), "mm_token_type_ids": torch.cat(types),
             "video_grid_thw": torch.cat([t["video_grid_thw"] for t in texts])}
    apply_method(model, "dense")
    try:
        positions, deltas = rope_index(model, batch)
    finally:
        remove_framefusion(model)
    merge = model.config.vision_config.spatial_merge_size
    vision = (model.config.image_token_id, model.config.video_token_id)
    for row, single in enumerate(texts):
        expected, next_position = reference_positions(batch["input_ids"][row], batch["attention_mask"][row],
                                                      single["video_grid_thw"].tolist(), merge, [1.0], vision)
        attended = batch["attention_mask"][row].bool()
        assert torch.equal(positions[:, row, attended], expected[:, attended]), row
        assert int(deltas[row, 0]) + int(attended.sum()) == next_position, row


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_generation_decodes_from_the_published_positions(family, tiny_model_factory):
    """Prefill and every decode step of `generate` get the reference positions (dense and FrameFusion)."""
    model, processor = tiny_model_factory(family)
    inputs = prompt(processor, frames=(16,))
    merge = model.config.vision_config.spatial_merge_size
    grids, intervals = block_grids(model, inputs)
    expected, next_position = reference_positions(inputs["input_ids"][0], None, grids, merge, intervals,
                                                  (model.config.image_token_id, model.config.video_token_id))
    text_model = adapter_for(model).text_model(model)
    for method in ("dense", "framefusion"):
        seen = []
        handle = text_model.register_forward_pre_hook(
            lambda _m, _a, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True)
        apply_method(model, method, 0.3)
        try:
            with torch.no_grad():
                model.generate(**inputs, max_new_tokens=3, do_sample=False)
        finally:
            remove_framefusion(model)
            handle.remove()
        prefill = seen[0][-3:, 0] if seen[0].shape[0] == 4 else seen[0][:, 0]  # [3, N] (5.x may prepend text ids)
        assert torch.equal(prefill, expected), method
        for step, ids in enumerate(seen[1:]):
            assert ids[-3:].flatten().tolist() == [next_position + step] * 3, (method, step)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_qwen3_families_already_follow_the_rule(family, tiny_model_factory):
    """Each frame is its own span there (after a timestamp): both rules coincide, so nothing is installed."""
    model, processor = tiny_model_factory(family, num_layers=4 if family == "qwen3_vl" else 8)
    inputs = prompt(processor, frames=(16,))
    grids = []
    for t, h, w in inputs["video_grid_thw"].tolist():
        grids += [(1, h, w)] * t  # one span per temporal patch
    expected, _ = reference_positions(inputs["input_ids"][0], None, grids, model.config.vision_config.spatial_merge_size,
                                      [1.0] * len(grids), (model.config.image_token_id, model.config.video_token_id))
    apply_method(model, "dense")
    try:
        module = adapter_for(model).multimodal_module(model)
        assert "get_rope_index" not in vars(module)
        positions, _ = rope_index(model, inputs)
    finally:
        remove_framefusion(model)
    assert torch.equal(positions[:, 0], expected)


def test_published_positions_moves_later_blocks_with_the_text():
    """Two video blocks written by the 5.x rule (t = 3 temporal steps, 1 x 1 grid): the fix shifts everything after
    the first block, the second block included."""
    vision = 9
    ids = torch.tensor([[1, 9, 9, 9, 2, 9, 9, 9, 3]])
    stock = torch.tensor([[0, 1, 2, 3, 2, 3, 4, 5, 4], [0, 1, 1, 1, 2, 3, 3, 3, 4], [0, 1, 1, 1, 2, 3, 3, 3, 4]])
    fixed, deltas = published_positions(stock[:, None], torch.tensor([[6 - 9]]), ids, None, (vision,))
    assert fixed[:, 0].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 1, 1, 4, 5, 5, 5, 8],
                                    [0, 1, 1, 1, 4, 5, 5, 5, 8]]
    assert int(deltas) == 9 - 9
