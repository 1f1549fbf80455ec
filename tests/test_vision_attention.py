"""Vision-encoder saliency probes: the attention each video token receives, checked against independent paths."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_random_clip

from framefusion.adapters import adapter_for
from framefusion.core.patches import PatchStack
from framefusion.video.prompting import prepare_inputs


def probe_and_inputs(model, processor, clips):
    """A probe with its hooks on a patch stack of its own (probe.patches.undo_to(0) removes them), and inputs."""
    adapter = adapter_for(model)
    probe = adapter.vision_probe(model, PatchStack())
    inputs = prepare_inputs(processor, clips, "What is happening?")
    return probe, inputs


def test_siglip_saliency_equals_its_own_attention_weights(tiny_model_factory):
    model, processor = tiny_model_factory("llava_onevision", num_layers=2, attn_implementation="eager")
    probe, inputs = probe_and_inputs(model, processor, [make_random_clip(4, seed=1), make_random_clip(4, seed=2)])
    try:
        with torch.no_grad():
            model(**inputs)
            saliency = probe.take()
            pixels = inputs["pixel_values_videos"].flatten(0, 1)  # [videos * frames, C, H, W]
            attentions = model.model.vision_tower(pixels, output_attentions=True).attentions[-1]  # [F, H, n, n]
    finally:
        probe.patches.undo_to(0)
    received = attentions.float().mean(dim=(1, 2))  # [F, n]
    side = math.isqrt(received.shape[1])
    pooled = torch.nn.functional.interpolate(received.view(-1, 1, side, side), size=[math.ceil(side / 2)] * 2,
                                             mode="bilinear").flatten()
    torch.testing.assert_close(saliency, pooled, atol=1e-6, rtol=1e-5)


def loop_received(q, k, scaling):
    """Received attention per key of one frame, head by head and query by query."""
    heads, n, _ = q.shape
    total = torch.zeros(n, dtype=torch.float64)
    for h in range(heads):
        for i in range(n):
            row = torch.softmax((k[h].double() @ q[h, i].double()) * scaling, dim=0)
            total += row / (heads * n)
    return total


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_qwen_vit_saliency_equals_a_loop_over_frames_heads_and_queries(family, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=2)
    visual = model.model.visual
    captured = {}

    def grab(module, args, kwargs):
        captured.update(hidden=args[0], cu=kwargs["cu_seqlens"], pe=kwargs["position_embeddings"])

    handle = visual.blocks[-1].attn.register_forward_pre_hook(grab, with_kwargs=True)
    probe, inputs = probe_and_inputs(model, processor, [make_random_clip(8, static_fraction=0.5)])
    try:
        with torch.no_grad():
            model(**inputs)
        saliency = probe.take()
    finally:
        probe.patches.undo_to(0)
        handle.remove()
    attention = visual.blocks[-1].attn
    hidden, cu = captured["hidden"], captured["cu"].tolist()
    q, k, _ = attention.qkv(hidden).detach().reshape(hidden.shape[0], 3, attention.num_heads, -1).unbind(1)
    cos, sin = (t[:, None, :] for t in captured["pe"])
    half = q.shape[-1] // 2
    turn = lambda x: torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # noqa: E731
    q, k = q * cos + turn(q) * sin, k * cos + turn(k) * sin
    per_patch = torch.cat([loop_received(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), attention.scaling)
                           for a, b in zip(cu[:-1], cu[1:])])
    unit = visual.spatial_merge_size ** 2
    expected = torch.stack([per_patch[i:i + unit].mean() for i in range(0, per_patch.numel(), unit)])
    torch.testing.assert_close(saliency.double(), expected, atol=1e-6, rtol=1e-5)


def test_qwen2_5_vl_saliency_follows_the_merger_output_order(tiny_model_factory):
    """Qwen2.5-VL attends in windows over a permuted sequence; its saliency must be in the features' order."""
    model, processor = tiny_model_factory("qwen2_5_vl", num_layers=2, image_size=128,
                                          vision_config={"window_size": 32})  # several windows per frame
    visual = model.model.visual
    captured = {}
    hooks = [visual.merger.register_forward_hook(lambda m, a, out: captured.update(window_order=out.detach())),
             visual.register_forward_hook(lambda m, a, out: captured.update(final=out.pooler_output.detach()))]
    clip = make_random_clip(4, size=128)
    probe, inputs = probe_and_inputs(model, processor, [clip])
    try:
        with torch.no_grad():
            model(**inputs)
        saliency = probe.take()
        unpermuted_probe = probe.parts[0]  # per token, in the ViT's (window) order
    finally:
        probe.patches.undo_to(0)
        for handle in hooks:
            handle.remove()
    window_order, final = captured["window_order"], captured["final"]
    # where each final token sits in the window-ordered sequence, found by matching the merger's rows
    match = torch.cdist(final[None].float(), window_order[None].float())[0].argmin(dim=1)
    assert not torch.equal(match, torch.arange(match.numel()))  # the windows really permute the tokens
    torch.testing.assert_close(saliency, unpermuted_probe[match])


def test_families_without_a_probe_say_so(tiny_model_factory):
    for family in ("internvl", "llava_next_video", "minicpmv4_6"):
        model, _ = tiny_model_factory(family)
        assert adapter_for(model).vision_probe(model, PatchStack()) is None
