"""FrameFusion inside real (tiny, random) Hugging Face video LLMs, checked against the slow reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import forward_reduced, generate_reduced, make_random_clip
from reference_framefusion import capture_dense_inputs, reference_greedy_decode, reference_prefill

from framefusion import (
    FrameFusionConfig,
    UnsupportedModelError,
    apply_framefusion,
    apply_method,
    last_stats,
    remove_framefusion,
)
from framefusion.adapters import adapter_for
from framefusion.core.compat import cache_argument, output_cache
from framefusion.core.stats import MERGED
from framefusion.tiny import FAMILIES
from framefusion.video import VideoClip
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in the video?"


def noisy_clip(num_frames=8, size=64, seed=0, noise=(0.0, 40.0)) -> VideoClip:
    """One random image repeated with per-frame Gaussian noise growing from noise[0] to noise[1]."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(size, size, 3)).astype(np.float32)
    sigmas = np.linspace(noise[0], noise[1], num_frames)
    frames = np.stack([np.clip(base + rng.normal(0, s, base.shape), 0, 255) for s in sigmas]).astype(np.uint8)
    return VideoClip(frames, np.arange(num_frames) * 0.5, 30.0, num_frames * 0.5)


def model_parts(model):
    adapter = adapter_for(model)
    text = adapter.text_model(model)
    return adapter, adapter.decoder_layers(model), text


def family_importance_queries(model) -> int:
    """The authors' rule: the Qwen-VL families average prune importance over 4 query rows, the others over 1."""
    return 4 if model.config.model_type.startswith("qwen") else 1


def run_reference(model, inputs, config):
    if config.importance_queries is None:
        config = dataclasses.replace(config, importance_queries=family_importance_queries(model))
    adapter, layers, text = model_parts(model)
    layout = adapter.token_layout(adapter.multimodal_module(model), inputs["input_ids"], adapter.video_inputs(dict(inputs)))
    return reference_prefill(model, dict(inputs), layout, config, layers, text, text.norm, model.lm_head)


def engine_kv_vision(stats) -> list[list[int]]:
    """Per layer, the sorted positions of the vision tokens in its KV cache."""
    return [sorted(stats.vision_positions[stats.alive_after(layer)].tolist()) for layer in range(stats.num_layers)]


def engine_final_positions(stats) -> list[int]:
    vision = set(stats.vision_positions.tolist())
    alive_vision = set(stats.vision_positions[stats.removed_at < 0].tolist())
    return [p for p in range(stats.seq_len) if p not in vision or p in alive_vision]


def reduced_forward(model, inputs, config: FrameFusionConfig):
    logits, stats = forward_reduced(model, inputs, "framefusion", config.cost,
                                    similarity_lower_bound=config.similarity_lower_bound,
                                    ratio_lower_bound=config.ratio_lower_bound,
                                    importance_queries=config.importance_queries)
    return logits[0], stats


def assert_matches_reference(model, inputs, config):
    reference = run_reference(model, inputs, config)
    logits, stats = reduced_forward(model, inputs, config)
    assert [(s.point, s.kind, s.removed) for s in stats.steps] == reference.steps
    assert engine_kv_vision(stats) == reference.kv_vision
    assert engine_final_positions(stats) == reference.final_positions
    torch.testing.assert_close(logits, reference.logits, atol=2e-5, rtol=1e-4)
    return stats


# ---- 1. cost = 1.0 is the dense model; remove restores it ------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_cost_one_is_dense_and_remove_restores(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    with torch.no_grad():
        stock = model(**inputs).logits
        try:
            apply_method(model, "dense")  # the published model (Qwen2-VL, Qwen2.5-VL: its positions)
            dense = model(**inputs).logits
            apply_framefusion(model, cost=1.0)
            assert torch.equal(model(**inputs).logits, dense)
            assert last_stats(model).kept_ratio == 1.0
            apply_framefusion(model, cost=0.3)
            reduced = model(**inputs).logits
            assert reduced.shape[1] < dense.shape[1]
        finally:
            remove_framefusion(model)
        assert torch.equal(model(**inputs).logits, stock)


# ---- 2. the engine equals the slow reference in every regime ---------------------------------------------
REGIMES = {
    # name: (clip, config, check on the recorded steps)
    "one-shot top-k merge": (
        lambda: noisy_clip(8, noise=(2, 30)), FrameFusionConfig(cost=0.3),
        lambda steps: steps[0].kind == "merge" and steps[0].capped and steps[0].removed > 0 and len(steps) == 1,
    ),
    "several merge steps": (
        lambda: noisy_clip(16, noise=(0, 120)), FrameFusionConfig(cost=0.5, similarity_lower_bound=0.7,
                                                                  ratio_lower_bound=0.02),
        lambda steps: sum(s.kind == "merge" and s.removed > 0 for s in steps) >= 3 and steps[-1].kind == "prune",
    ),
    "merge then prune": (
        lambda: make_random_clip(8, static_fraction=0.5), FrameFusionConfig(cost=0.3),
        lambda steps: steps[0].kind == "merge" and steps[0].removed > 0 and steps[-1].kind == "prune",
    ),
    "immediate prune": (
        lambda: make_random_clip(8), FrameFusionConfig(cost=0.3, similarity_lower_bound=2.0),
        lambda steps: [s.kind for s in steps] == ["merge", "prune"] and steps[0].removed == 0 and steps[1].point == 1,
    ),
}


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("queries", [1, 4])
def test_engine_matches_reference(regime, attention, queries, tiny_model_factory):
    make_clip, config, regime_happened = REGIMES[regime]
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8, attn_implementation=attention)
    inputs = prepare_inputs(processor, [make_clip()], QUESTION)
    stats = assert_matches_reference(model, inputs, dataclasses.replace(config, importance_queries=queries))
    assert regime_happened(stats.steps), [(s.point, s.kind, s.removed, s.capped) for s in stats.steps]
    assert stats.importance_queries == queries


def cut_after_video(inputs, video_token_id: int, tokens_after: int):
    """The prompt ended `tokens_after` tokens after its last video token (the processor's other outputs kept)."""
    last = int(torch.nonzero(inputs["input_ids"][0] == video_token_id).flatten()[-1])
    end = last + 1 + tokens_after
    return {key: value[:, :end] if key in ("input_ids", "attention_mask", "mm_token_type_ids") else value
            for key, value in inputs.items()}


@pytest.mark.parametrize("tokens_after", [0, 1, 2, 3])
def test_prune_rows_when_fewer_than_q_tokens_follow_the_video(tokens_after, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8)
    full = prepare_inputs(processor, [make_random_clip(8)], QUESTION)
    inputs = cut_after_video(full, model.config.video_token_id, tokens_after)
    assert inputs["input_ids"].shape[1] < full["input_ids"].shape[1]
    config = FrameFusionConfig(cost=0.3, similarity_lower_bound=2.0, importance_queries=4)
    stats = assert_matches_reference(model, inputs, config)  # the last 4 rows include alive video tokens
    assert [s.kind for s in stats.steps] == ["merge", "prune"] and stats.steps[1].removed > 0


def test_qwen_families_default_to_four_query_rows_and_others_to_one(tiny_model_factory):
    for family in FAMILIES:
        model, processor = tiny_model_factory(family, num_layers=4)
        inputs = prepare_inputs(processor, [make_random_clip(8)], QUESTION)
        _, stats = reduced_forward(model, inputs, FrameFusionConfig(cost=0.3, similarity_lower_bound=2.0))
        assert stats.importance_queries == family_importance_queries(model), family
        assert stats.to_dict()["importance_queries"] == stats.importance_queries


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "qwen2_vl"])
def test_engine_matches_reference_in_every_family(family, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=6)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    stats = assert_matches_reference(model, inputs, FrameFusionConfig(cost=0.3))
    assert stats.steps[0].kind == "merge" and stats.steps[0].removed > 0


# ---- 3. budget and monotone counts ------------------------------------------------------------------------
@pytest.mark.parametrize("cost", [0.2, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("static_fraction", [0.0, 0.25, 0.5])
def test_achieved_budget_lands_on_cost(cost, static_fraction, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=12)
    inputs = prepare_inputs(processor, [make_random_clip(16, static_fraction=static_fraction)], QUESTION)
    _, stats = reduced_forward(model, inputs, FrameFusionConfig(cost=cost))
    assert abs(stats.kept_ratio - cost) <= 0.02, (stats.kept_ratio, stats.steps)
    for counts in (stats.vision_tokens_per_layer(), stats.tokens_per_layer()):
        assert all(a >= b for a, b in zip(counts, counts[1:]))


# ---- 4. transitive groups inside the model ---------------------------------------------------------------
def test_merged_token_holds_the_mean_of_its_group(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=4)
    _, layers, _ = model_parts(model)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    seen = {}

    def keep_embeds(module, args, kwargs):
        seen["embeds"] = (args[0] if args else kwargs["hidden_states"])[0].clone()

    def keep_merged(module, args):
        seen["merged"] = args[0][0].clone()

    handles = [layers[0].register_forward_pre_hook(keep_embeds, with_kwargs=True),
               layers[0].input_layernorm.register_forward_pre_hook(keep_merged)]
    try:
        _, stats = reduced_forward(model, inputs, FrameFusionConfig(cost=0.3))
    finally:
        for handle in handles:
            handle.remove()
    owner = stats.representatives(0)
    alive_positions = [p for p in range(stats.seq_len)
                       if p not in set(stats.vision_positions[stats.removed_at == 0].tolist())]
    row_of = {p: r for r, p in enumerate(alive_positions)}
    sizes = torch.bincount(owner[owner >= 0], minlength=stats.num_vision_tokens)
    assert int(sizes.max()) >= 3  # runs of merged tokens, not just pairs
    for head in torch.nonzero(sizes > 1).flatten().tolist():
        members = stats.vision_positions[owner == head]
        expected = seen["embeds"][members].mean(dim=0)
        got = seen["merged"][row_of[int(stats.vision_positions[head])]]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---- 5. generate, several videos, images, text ----------------------------------------------------------
def extended_inputs(inputs, tokens: list[int]):
    extra = torch.tensor([tokens])
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    if "mm_token_type_ids" in inputs:
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    return out


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_generate_matches_reference_decode(family, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=6)
    _, layers, text = model_parts(model)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    config = FrameFusionConfig(cost=0.3)
    new_tokens = 6
    reference = run_reference(model, inputs, config)
    first = int(reference.logits[-1].argmax())
    probe = extended_inputs(inputs, [first] * new_tokens)  # positions only depend on the length
    cos_sin = capture_dense_inputs(model, probe, layers, text)["cos_sin"]
    ref_tokens, ref_logits = reference_greedy_decode(reference, first, new_tokens - 1, cos_sin, layers,
                                                     text.embed_tokens, text.norm, model.lm_head,
                                                     inputs["input_ids"].shape[1])
    apply_framefusion(model, config.cost)
    try:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
    finally:
        remove_framefusion(model)
    generated = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    assert generated == ref_tokens
    for step, logits in enumerate(ref_logits, start=1):
        torch.testing.assert_close(out.logits[step][0], logits, atol=2e-5, rtol=1e-4)


def test_two_videos_are_reduced_each_within_itself(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=6)
    clips = [make_random_clip(8, static_fraction=0.5, seed=1), make_random_clip(8, static_fraction=0.25, seed=2)]
    inputs = prepare_inputs(processor, clips, "Compare the two videos.")
    stats = assert_matches_reference(model, inputs, FrameFusionConfig(cost=0.3))
    assert len(stats.grids) == 2
    merged = stats.removed_by == MERGED
    video = stats.token_grid[:, 0]
    assert merged.any()
    assert torch.equal(video[merged], video[stats.merged_into[merged]])


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "internvl"])
def test_image_plus_video_keeps_the_image_dense(family, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=6)
    image = np.random.default_rng(3).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION, images=[image])
    stats = assert_matches_reference(model, inputs, FrameFusionConfig(cost=0.3))
    image_token = model.config.image_token_id
    image_positions = torch.nonzero(inputs["input_ids"][0] == image_token).flatten()
    if family == "internvl":  # frames are image tiles too; this template writes the image after the frames
        image_positions = image_positions[8 * 16:]
        assert stats.num_vision_tokens == 8 * 16
    assert image_positions.numel() > 0
    assert not set(image_positions.tolist()) & set(stats.vision_positions.tolist())
    assert set(image_positions.tolist()) <= set(engine_final_positions(stats))


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_and_image_only_prompts_stay_dense(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    image = np.random.default_rng(4).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    for inputs in (prepare_inputs(processor, [], "Tell me a story."),
                   prepare_inputs(processor, [], "Describe the picture.", images=[image])):
        with torch.no_grad():
            dense = model(**inputs).logits
            apply_framefusion(model, cost=0.3)
            try:
                assert torch.equal(model(**inputs).logits, dense)
                assert last_stats(model) is None
                model.generate(**inputs, max_new_tokens=2, do_sample=False)
            finally:
                remove_framefusion(model)


# ---- KV cache and decode positions -------------------------------------------------------------------------
def test_cache_holds_alive_tokens_and_reports_dense_length(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=6)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    apply_framefusion(model, cost=0.3)
    try:
        with torch.no_grad():
            out = model(**inputs, use_cache=True)
        stats = last_stats(model)
        cache = output_cache(out)
        assert [layer.keys.shape[-2] for layer in cache.layers] == stats.tokens_per_layer()
        assert cache.get_seq_length() == inputs["input_ids"].shape[1]
    finally:
        remove_framefusion(model)


@pytest.mark.parametrize("family, layers", [("llava_onevision", 4), ("qwen3_5", 16), ("minicpmv4_6", 16)])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_several_new_tokens_at_once_equal_one_by_one(family, layers, attention, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=layers, attn_implementation=attention)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    new = torch.tensor([[5, 6, 7]])
    n = inputs["input_ids"].shape[1]
    positions = torch.arange(n, n + 3)[None]
    apply_framefusion(model, cost=0.3)
    try:
        with torch.no_grad():
            chunk_cache = output_cache(model(**inputs, use_cache=True))
            chunk = model(input_ids=new, **cache_argument(chunk_cache), position_ids=positions).logits[0]
            step_cache = output_cache(model(**inputs, use_cache=True))
            steps = [model(input_ids=new[:, i:i + 1], **cache_argument(step_cache),
                           position_ids=positions[:, i:i + 1]).logits[0, -1] for i in range(3)]
    finally:
        remove_framefusion(model)
    torch.testing.assert_close(chunk, torch.stack(steps), atol=2e-5, rtol=1e-4)


# ---- refusals and errors -----------------------------------------------------------------------------------
def test_batch_of_videos_is_refused_but_batch_of_text_runs(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl")
    clip = make_random_clip(8)
    single = prepare_inputs(processor, [clip], QUESTION)
    batch = {k: torch.cat([v, v]) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else
             torch.cat([v, v]) if k in ("pixel_values_videos", "video_grid_thw") else v for k, v in single.items()}
    apply_framefusion(model)
    try:
        with pytest.raises(ValueError, match="one prompt at a time"):
            model(**batch)
        text = processor.tokenizer(["hello there", "a red ball"], return_tensors="pt", padding=True)
        model.generate(**text, max_new_tokens=2, do_sample=False)
    finally:
        remove_framefusion(model)


def test_padded_prompt_is_refused(tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl")
    inputs = dict(prepare_inputs(processor, [make_random_clip(8)], QUESTION))
    inputs["attention_mask"] = inputs["attention_mask"].clone()
    inputs["attention_mask"][0, 0] = 0
    apply_framefusion(model)
    try:
        with pytest.raises(ValueError, match="padded"):
            model(**inputs)
    finally:
        remove_framefusion(model)


def test_unsupported_model_lists_families():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(UnsupportedModelError, match="Qwen2-VL.*InternVL"):
        apply_framefusion(model)


@pytest.mark.parametrize("kwargs, name", [({"cost": 0}, "cost"), ({"similarity_lower_bound": -2}, "similarity"),
                                          ({"ratio_lower_bound": 2}, "ratio_lower_bound")])
def test_out_of_range_parameters_are_rejected(kwargs, name, tiny_model_factory):
    model, _ = tiny_model_factory("qwen2_vl")
    with pytest.raises(ValueError, match=name):
        apply_framefusion(model, **kwargs)
    assert not any("forward" in layer.__dict__ for layer in model_parts(model)[1])


# ---- dtypes, attention implementations, accelerate --------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype, tiny_model_factory):
    model, processor = tiny_model_factory("qwen2_vl", num_layers=8, dtype=dtype)
    inputs = prepare_inputs(processor, [make_random_clip(16, static_fraction=0.5)], QUESTION)
    out, stats = generate_reduced(model, inputs, 3, "framefusion", 0.3)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert abs(stats.kept_ratio - 0.3) <= 0.02


def test_flash_attention_2_when_installed(tiny_model_factory):
    pytest.importorskip("flash_attn", reason="flash-attn is not installed (it needs a CUDA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("flash_attention_2 needs a CUDA GPU")
    from framefusion.tiny import build_tiny_model

    outputs = {}
    for attention in ("sdpa", "flash_attention_2"):  # the same weights (seed) under both kernels
        model, processor = build_tiny_model("qwen2_vl", attn_implementation=attention, dtype=torch.bfloat16)
        model.cuda()
        inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION).to("cuda")
        apply_framefusion(model)
        try:
            with torch.no_grad():
                logits = model(**inputs).logits[0, -1].float().cpu()
                out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            stats = last_stats(model)
        finally:
            remove_framefusion(model)
        assert abs(stats.kept_ratio - 0.3) <= 0.05
        outputs[attention] = (logits, out.cpu(), stats.vision_tokens_per_layer())
    (sdpa_logits, sdpa_ids, sdpa_counts), (flash_logits, flash_ids, flash_counts) = outputs.values()
    assert flash_counts == sdpa_counts and flash_ids.shape == sdpa_ids.shape
    torch.testing.assert_close(flash_logits, sdpa_logits, atol=5e-2, rtol=5e-2)  # bf16 kernels differ in rounding


def test_accelerate_dispatch_keeps_working(tmp_path):
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module
    from transformers import AutoModelForImageTextToText

    from framefusion.tiny import build_tiny_model, save_tiny_checkpoint

    path = save_tiny_checkpoint("qwen2_vl", tmp_path / "ckpt", num_layers=6)
    plain, processor = build_tiny_model("qwen2_vl", num_layers=6)
    dispatched = AutoModelForImageTextToText.from_pretrained(path, device_map="auto").eval()
    for layer in model_parts(dispatched)[1]:  # force accelerate's forward wrapping on every layer
        add_hook_to_module(layer, AlignDevicesHook(execution_device="cpu"), append=True)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    outputs = []
    for model in (plain, dispatched):
        apply_framefusion(model, cost=0.3)
        try:
            with torch.no_grad():
                outputs.append((model(**inputs).logits, model.generate(**inputs, max_new_tokens=4, do_sample=False),
                                last_stats(model).kept_ratio))
        finally:
            remove_framefusion(model)
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1]) and outputs[0][2] == outputs[1][2]
    assert all(hasattr(layer, "_hf_hook") for layer in model_parts(dispatched)[1])


# ---- hybrid decoders (Qwen3.5, MiniCPM-V 4.6): linear attention in three of every four layers ------------
HYBRID = ("qwen3_5", "minicpmv4_6", "minicpmv4_7")


@pytest.mark.parametrize("family", HYBRID)
@pytest.mark.parametrize("static_fraction", [0.0, 0.5])
def test_hybrid_budget_with_prunes_only_after_attention_layers(family, static_fraction, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=16)
    layers = model_parts(model)[1]
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=static_fraction)], QUESTION)
    stats = assert_matches_reference(model, inputs, FrameFusionConfig(cost=0.3))  # the slow, loop-based rules
    assert abs(stats.kept_ratio - 0.3) <= 0.03, (stats.kept_ratio, stats.steps)
    prunes = [s.point for s in stats.steps if s.kind == "prune"]
    assert prunes and all(layers[point - 1].block_type == "full_attention" for point in prunes)
    merges = [s.point for s in stats.steps if s.kind == "merge"]
    assert prunes[0] > merges[-1] + 1  # the prune waited past linear layers for the first attention layer


@pytest.mark.parametrize("family", HYBRID)
@pytest.mark.parametrize("queries", [1, 4])
def test_hybrid_engine_matches_reference_with_several_merge_steps(family, queries, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=16)
    config = FrameFusionConfig(cost=0.5, similarity_lower_bound=0.7, ratio_lower_bound=0.02, importance_queries=queries)
    inputs = prepare_inputs(processor, [noisy_clip(16, noise=(0, 120))], QUESTION)
    stats = assert_matches_reference(model, inputs, config)
    assert sum(s.kind == "merge" and s.removed > 0 for s in stats.steps) >= 2


@pytest.mark.parametrize("family", HYBRID)
def test_hybrid_generate_and_a_second_turn(family, tiny_model_factory):
    model, processor = tiny_model_factory(family, num_layers=16)
    inputs = prepare_inputs(processor, [make_random_clip(8, static_fraction=0.5)], QUESTION)
    apply_framefusion(model, cost=0.3)
    try:
        with torch.no_grad():
            first = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
            stats = last_stats(model)
            cache = output_cache(first)
            assert cache.get_seq_length() == first.sequences.shape[1] - 1  # dense positions, hybrid cache
            turn = processor.tokenizer("And then?", return_tensors="pt")["input_ids"]
            follow = torch.cat([first.sequences, turn], dim=1)
            n = first.sequences.shape[1]
            second = model(input_ids=follow[:, n - 1:], **cache_argument(cache),
                           position_ids=torch.arange(n - 1, follow.shape[1])[None]).logits[0, -1]
    finally:
        remove_framefusion(model)
    assert abs(stats.kept_ratio - 0.3) <= 0.03 and torch.isfinite(second).all()


def test_minicpm_with_slices_matches_reference(tiny_model_factory):
    model, processor = tiny_model_factory("minicpmv4_6", num_layers=16, video_slice_mode=True)
    clip = make_random_clip(6, size=128, static_fraction=0.5)
    clip.frames = np.concatenate([clip.frames] * 3, axis=2)  # 128 x 384: a thumbnail and slices per frame
    inputs = prepare_inputs(processor, [clip], QUESTION)
    stats = assert_matches_reference(model, inputs, FrameFusionConfig(cost=0.3))
    assert len(stats.grids) >= 2 and abs(stats.kept_ratio - 0.3) <= 0.03
    merged = stats.removed_by == MERGED
    assert merged.any() and torch.equal(stats.token_grid[merged, 0], stats.token_grid[stats.merged_into[merged], 0])
