"""VideoSession: many questions about one video, each answer the one a fresh `ask` gives, with the video decoded,
encoded, reduced and prefilled once where that is exact."""

from __future__ import annotations

import pytest
import torch
from conftest import make_random_clip
from test_patches import instance_state

from framefusion import VideoSession, reduced
from framefusion.adapters import adapter_for
from framefusion.core.feature_cache import FeatureCache, content_key, slim_output
from framefusion.core.patches import patch_scope
from framefusion.methods import method_names
from framefusion.pipeline import ask, greedy_generate, model_inputs
from framefusion.pipeline.loading import LoadedModel
from framefusion.pipeline.session import SessionClosedError

QUESTIONS = ("What is happening in the video?", "What color is the car?", "Describe the video in detail please.")
NEW_TOKENS = 4
LAYERS = 6
PRE_LLM = {"vidcom2", "evs", "visionzip", "fastvid", "holitom"}  # their selection is memoized per video


def loaded_model(tiny_model_factory, family: str, **kwargs) -> LoadedModel:
    model, processor = tiny_model_factory(family, num_layers=LAYERS, **kwargs)
    return LoadedModel(model, processor, f"tiny-{family}", torch.device("cpu"), torch.float32)


def assert_same_answer(answer, fresh) -> None:
    """Token for token, the same achieved budget and KV cache, the same first-token logits."""
    assert answer.answer_ids == fresh.answer_ids
    assert answer.kept_ratio == fresh.kept_ratio
    assert answer.tokens_per_layer == fresh.tokens_per_layer
    assert answer.prefill_ratio == fresh.prefill_ratio
    torch.testing.assert_close(answer.first_token_logits, fresh.first_token_logits, atol=1e-5, rtol=1e-5)


# ---- every method, two families: the session's answers are fresh asks' ----------------------------------------
@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
@pytest.mark.parametrize("method", method_names())
def test_every_answer_equals_a_fresh_ask(family, method, tiny_model_factory):
    loaded = loaded_model(tiny_model_factory, family)
    clip = make_random_clip(8, static_fraction=0.5)
    questions = QUESTIONS[:2]  # the first records, the second replays
    fresh = [ask(loaded, clip, question, method=method, budget=0.3, max_new_tokens=NEW_TOKENS)
             for question in questions]
    stock = instance_state(loaded.model)  # after a first run (transformers adds its own hooks on first use)
    with VideoSession(loaded, clip, method=method, budget=0.3) as session:
        answers = [session.ask(question, max_new_tokens=NEW_TOKENS) for question in questions]
        assert instance_state(loaded.model) == stock  # nothing of the session stays on the model between questions
    for answer, reference in zip(answers, fresh):
        assert_same_answer(answer, reference)
    first, later = answers[0].reuse, [a.reuse for a in answers[1:]]
    assert not first.frames and first.features_encoded >= 1 and first.features_served == 0
    for reuse in later:
        assert reuse.frames and reuse.features_served >= 1 and reuse.features_encoded == 0
        assert reuse.selections == (1 if method in PRE_LLM else 0)
        if method == "streamingllm":
            assert reuse.prefix_layers == 0 and "prompt's length" in reuse.note
        elif method in ("dense", "uniform", "vidcom2", "evs", "visionzip", "fastvid"):
            assert reuse.prefix_layers == LAYERS  # nothing after the video depends on the question's attention
        else:
            assert 0 < reuse.prefix_layers <= LAYERS, (method, reuse)
    assert first.recorded == (method != "streamingllm")


@pytest.mark.parametrize("family,method", [("qwen3_vl", "framefusion"), ("qwen3_vl", "dense"),
                                           ("internvl", "framefusion"), ("qwen3_5", "framefusion")])
def test_other_families(family, method, tiny_model_factory):
    """Qwen3-VL's deepstack features follow the replayed rows; InternVL encodes frames as images; on a hybrid
    decoder the prefix is not replayed (and the session says why), the rest is."""
    loaded = loaded_model(tiny_model_factory, family)
    clip = make_random_clip(8, static_fraction=0.5)
    with VideoSession(loaded, clip, method=method, budget=0.3) as session:
        answers = [session.ask(question, max_new_tokens=NEW_TOKENS) for question in QUESTIONS[:2]]
    for question, answer in zip(QUESTIONS, answers):
        assert_same_answer(answer, ask(loaded, clip, question, method=method, budget=0.3,
                                       max_new_tokens=NEW_TOKENS))
    reuse = answers[1].reuse
    assert reuse.features_served >= 1
    if family == "qwen3_5":
        assert reuse.prefix_layers == 0 and "hybrid" in reuse.note
    else:
        assert reuse.prefix_layers > 0


def test_replayed_layers_run_the_question_only(tiny_model_factory):
    """Before the boundary a replaying prefill gives each layer the question's rows only; from it, every alive row."""
    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    layers = adapter_for(loaded.model).decoder_layers(loaded.model)
    seen: list[int] = []
    handles = [layer.input_layernorm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
               for layer in layers]
    try:
        with VideoSession(loaded, make_random_clip(8, static_fraction=0.5), method="framefusion") as session:
            session.ask(QUESTIONS[0], max_new_tokens=1)
            first, seen[:] = list(seen), []
            answer = session.ask(QUESTIONS[1], max_new_tokens=1)
    finally:
        for handle in handles:
            handle.remove()
    boundary, prefix = answer.reuse.prefix_layers, answer.reuse.prefix_tokens
    question_rows = seen[0]
    assert question_rows == answer.stats.seq_len - prefix
    assert seen[:boundary] == [question_rows] * boundary
    assert seen[boundary:LAYERS] == answer.stats.tokens_per_layer()[boundary:]
    assert first[0] > question_rows + prefix // 2  # the recording prefill ran the whole prompt


def test_history_keeps_the_conversation_and_still_reuses_the_prefix(tiny_model_factory):
    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    clip = make_random_clip(8, static_fraction=0.5)
    with VideoSession(loaded, clip, method="framefusion", history=True) as session:
        answers = [session.ask(question, max_new_tokens=NEW_TOKENS) for question in QUESTIONS[:2]]
        assert session.turns == [(QUESTIONS[0], answers[0].answer), (QUESTIONS[1], answers[1].answer)]
    with reduced(loaded.model, "framefusion", 0.3) as run:  # the same two turns, prompted from scratch
        inputs = model_inputs(loaded, [clip], QUESTIONS[1], history=[(QUESTIONS[0], answers[0].answer)])
        fresh = greedy_generate(loaded, inputs, NEW_TOKENS)
        assert answers[1].kept_ratio == run.stats.kept_ratio
    assert answers[1].answer_ids == fresh.new_tokens.tolist()
    assert answers[1].stats.seq_len > answers[0].stats.seq_len  # the first turn is in the prompt
    assert answers[1].reuse.prefix_layers > 0


def test_a_session_answer_s_timings_cover_its_request(tiny_model_factory, tmp_path):
    """As ask's: the parts (video, processor with the method's installation and frame selection, vision, prefill,
    decode) add up to total_s, and the video's decoding counts for the first question only."""
    from framefusion.video import write_video

    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    path = write_video(tmp_path / "clip.mp4", make_random_clip(8, static_fraction=0.5).frames, fps=4.0)
    with VideoSession(loaded, path, method="framefusion") as session:
        answers = [session.ask(question, max_new_tokens=NEW_TOKENS) for question in QUESTIONS[:2]]
    for index, answer in enumerate(answers):
        timings = answer.timings
        parts = timings.video_s + timings.processor_s + timings.vision_s + timings.prefill_s + timings.decode_s
        assert timings.processor_s > 0
        assert (timings.video_s > 0) == (index == 0), timings
        assert abs(parts - timings.total_s) <= 0.05 * timings.total_s, timings


def test_a_closed_session_refuses_questions_and_frees_its_memory(tiny_model_factory):
    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    clip = make_random_clip(8, static_fraction=0.5)
    session = VideoSession(loaded, clip, method="dense")
    answer = session.ask(QUESTIONS[0], max_new_tokens=1)
    memory = session.memory()
    hidden = loaded.model.config.text_config.hidden_size
    assert memory["frames"] == clip.frames.nbytes
    assert memory["features"] == answer.vision_tokens * hidden * 4  # held once, float32
    kv = loaded.model.config.text_config
    head_dim = kv.hidden_size // kv.num_attention_heads
    prefix = answer.reuse.prefix_tokens
    assert memory["prefix"] >= LAYERS * prefix * 2 * kv.num_key_value_heads * head_dim * 4
    session.close()
    assert session.memory()["total"] == 0
    with pytest.raises(SessionClosedError, match="closed"):
        session.ask(QUESTIONS[1])


def test_bad_parameters_fail_when_the_session_opens(tiny_model_factory):
    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    with pytest.raises(ValueError, match="unknown method"):
        VideoSession(loaded, make_random_clip(8), method="nope")
    with pytest.raises(ValueError, match="out of range"):
        VideoSession(loaded, make_random_clip(8), method="framefusion", budget=1.5)


def test_video_session_is_exported_lazily():
    """`import framefusion` does not import the pipeline (its top-level imports name no pipeline module); the name
    resolves on first use."""
    import ast
    import inspect

    import framefusion
    from framefusion.pipeline.session import VideoSession as session_class

    tree = ast.parse(inspect.getsource(framefusion))
    imported = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert imported and not any(name.startswith("framefusion.pipeline") for name in imported)
    assert framefusion.VideoSession is session_class and "VideoSession" in framefusion.__all__
    assert "VideoSession" in dir(framefusion)


# ---- the feature cache -----------------------------------------------------------------------------------------
def test_feature_cache_serves_the_encoder_output_of_the_same_inputs_only(tiny_model_factory):
    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    model = loaded.model
    module = adapter_for(model).multimodal_module(model)
    cache = FeatureCache()
    clips = [make_random_clip(8, seed=0), make_random_clip(8, seed=1)]
    calls = []
    with reduced(model, "visionzip", 0.3), patch_scope(model) as patches, cache.serving(module, patches):
        encoder = module.get_video_features
        for clip in (clips[0], clips[0], clips[1]):
            inputs = model_inputs(loaded, [clip], QUESTIONS[0])
            with torch.no_grad():
                output = encoder(inputs["pixel_values_videos"], inputs["video_grid_thw"])
            calls.append((output, module._framefusion_saliency_probe.take()))
    assert (cache.hits, cache.misses) == (1, 2)
    assert calls[1][0] is calls[0][0] and calls[1][1] is calls[0][1]  # features and saliency come back
    assert not torch.equal(calls[2][0].pooler_output[0], calls[0][0].pooler_output[0])
    assert set(calls[0][0].keys()) == {"pooler_output"}  # the encoder's inner states are not kept
    assert "get_video_features" not in vars(module)


def test_feature_cache_is_bounded_least_recently_used_first():
    def entry_of(n):
        tensor = torch.zeros(n, dtype=torch.uint8)
        return slim_output(tensor)

    from framefusion.core.feature_cache import CachedFeatures

    cache = FeatureCache(max_bytes=100)
    for key, size in (("a", 40), ("b", 40)):
        cache.put(key, CachedFeatures(entry_of(size), None, size, 0.0))
    cache.get("a")  # b is now the least recently used
    cache.put("c", CachedFeatures(entry_of(40), None, 40, 0.0))
    assert list(cache.entries) == ["a", "c"] and cache.evictions == 1 and cache.nbytes == 80
    cache.put("huge", CachedFeatures(entry_of(200), None, 200, 0.0))
    assert "huge" not in cache.entries


def test_content_key_reads_every_byte():
    pixels = torch.zeros(4, 6)
    changed = pixels.clone()
    changed[3, 5] = 1e-7
    assert content_key("e", {"x": pixels}) != content_key("e", {"x": changed})
    assert content_key("e", {"x": pixels}) == content_key("e", {"x": pixels.clone()})
    assert content_key("e", {"x": pixels}) != content_key("e", {"x": pixels.double()})
    assert content_key("e", {"x": pixels.bfloat16()}) == content_key("e", {"x": pixels.bfloat16()})


def test_a_prompt_with_another_video_prefix_is_not_replayed(tiny_model_factory):
    """The record is replayed only where the prompt's ids up to its last video token are the recorded ones."""
    from framefusion.core.prefix import PrefixReuse
    from framefusion.methods.install import installed_engine

    loaded = loaded_model(tiny_model_factory, "qwen2_vl")
    clips = [make_random_clip(8, static_fraction=0.5, seed=0), make_random_clip(16, static_fraction=0.5, seed=1)]
    prefix = PrefixReuse()
    used, ids = [], []
    for clip in (clips[0], clips[1], clips[0]):
        with reduced(loaded.model, "framefusion", 0.3), patch_scope(loaded.model) as patches:
            patches.set_attribute(installed_engine(loaded.model), "prefix", prefix)
            generation = greedy_generate(loaded, model_inputs(loaded, [clip], QUESTIONS[1]), NEW_TOKENS)
        used.append(prefix.last)
        ids.append(generation.new_tokens.tolist())
    assert used[0].recorded and used[1].replayed_layers == 0 and "differs" in used[1].note
    assert used[2].replayed_layers > 0
    for clip, got in zip((clips[0], clips[1], clips[0]), ids):
        assert got == ask(loaded, clip, QUESTIONS[1], max_new_tokens=NEW_TOKENS).answer_ids
