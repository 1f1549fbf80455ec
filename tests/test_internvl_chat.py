"""InternVL2.5 in its original remote-code format, loaded natively: weights, tokenizer, prompt, layout, methods, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import single_json, video_file  # noqa: F401
from conftest import make_random_clip
from reference_internvl import internlm2_logits, internvit_features, shuffle_reference, wqkv_heads
from safetensors.torch import load_file

from framefusion.adapters import adapter_for
from framefusion.api import last_stats
from framefusion.methods import method_names
from framefusion.models import find_format
from framefusion.models.internvl_chat import to_original
from framefusion.models.internvl_chat.modeling import pixel_shuffle
from framefusion.models.internvl_chat.sentencepiece import (
    BYTE,
    NORMAL,
    Piece,
    SentencePieceModel,
    bpe_merges,
    fast_tokenizer,
    read_model,
    write_model,
)
from framefusion.models.internvl_chat.weights import fuse_wqkv, split_wqkv
from framefusion.models.tiling import closest_grid, tile_grids
from framefusion.pipeline import ask
from framefusion.pipeline.loading import load_model
from framefusion.tiny.internvl_chat import save_internvl_chat_checkpoint
from framefusion.video.prompting import prepare_inputs

QUESTION = "What color is the square?"
TOKENS_PER_FRAME = 16  # 64 px tiles of 8 px patches, pixel shuffle 0.5 (the real 448 px / 14 px give 256)


@pytest.fixture(scope="module")
def internlm2_dir(tmp_path_factory):
    return save_internvl_chat_checkpoint(tmp_path_factory.mktemp("internvl") / "internlm2", llm="internlm2")


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    return save_internvl_chat_checkpoint(tmp_path_factory.mktemp("internvl") / "qwen2", llm="qwen2", num_layers=2,
                                         qk_normalization=True)


@pytest.fixture(scope="module")
def loaded(internlm2_dir):
    return load_model(str(internlm2_dir), device="cpu")


def test_the_format_is_registered_and_builds_transformers_modules(loaded, internlm2_dir, qwen2_dir):
    raw = json.loads((internlm2_dir / "config.json").read_text())
    assert raw["architectures"] == ["InternVLChatModel"] and "llm_config" in raw and "vision_config" in raw
    assert find_format(raw).module == "internvl_chat"
    model = loaded.model
    assert model.config.model_type == "internvl_chat" and loaded.family == "InternVL2.5 (original format)"
    assert type(model.model.language_model).__name__ == "LlamaModel"
    assert type(model.model.vision_tower).__name__ == "InternVLVisionModel"
    qwen = load_model(str(qwen2_dir), device="cpu").model
    assert type(qwen.model.language_model).__name__ == "Qwen2Model"
    assert qwen.model.vision_tower.config.use_qk_norm and qwen.model.vision_tower.config.norm_type == "rms_norm"


def test_weights_round_trip_to_the_original_names_and_layouts(loaded, internlm2_dir, qwen2_dir):
    for folder, model in ((internlm2_dir, loaded.model), (qwen2_dir, load_model(str(qwen2_dir), device="cpu").model)):
        on_disk = load_file(str(folder / "model.safetensors"))
        back = to_original(model.state_dict(), model.config)
        assert set(back) == set(on_disk)
        assert all(torch.equal(back[name], on_disk[name]) for name in on_disk)
    assert any(".attention.wqkv." in name for name in on_disk) is False  # Qwen2 keeps q/k/v apart
    assert any(name.endswith("attn.qkv.weight") for name in on_disk)


def test_wqkv_split_matches_a_loop_over_heads():
    heads, kv_heads, d, width = 8, 2, 3, 5
    fused = torch.randn((heads + 2 * kv_heads) * d, width)
    q, k, v = split_wqkv(fused, heads, kv_heads, d)
    rows_q, rows_k, rows_v = wqkv_heads(fused.T, heads, kv_heads, d)  # the reference reads output columns
    assert torch.equal(q, torch.cat(rows_q, dim=1).T) and torch.equal(k, torch.cat(rows_k, dim=1).T)
    assert torch.equal(v, torch.cat(rows_v, dim=1).T)
    assert torch.equal(fuse_wqkv(q, k, v, heads, kv_heads, d), fused)
    bias = torch.randn((heads + 2 * kv_heads) * d)
    assert torch.equal(fuse_wqkv(*split_wqkv(bias, heads, kv_heads, d), heads, kv_heads, d), bias)


def test_the_llm_is_internlm2s_math(loaded, internlm2_dir):
    tensors = load_file(str(internlm2_dir / "model.safetensors"))
    llm = json.loads((internlm2_dir / "config.json").read_text())["llm_config"]
    ids = loaded.processor.tokenizer("Frame1: the quick brown fox")["input_ids"]
    with torch.no_grad():
        ours = loaded.model(input_ids=torch.tensor([ids])).logits[0]
    assert torch.allclose(ours, internlm2_logits(tensors, llm, ids), atol=1e-4)


@pytest.mark.parametrize("which", ["internlm2", "qwen2"])
def test_the_vision_path_is_internvit_pixel_shuffle_and_mlp1(which, internlm2_dir, qwen2_dir):
    folder = internlm2_dir if which == "internlm2" else qwen2_dir  # layer norm + qkv bias; RMS norm + q/k norm
    model = load_model(str(folder), device="cpu").model
    raw = json.loads((folder / "config.json").read_text())
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.model.get_video_features(pixels)
    assert ours.shape == (2, TOKENS_PER_FRAME, raw["llm_config"]["hidden_size"])
    assert torch.allclose(ours, internvit_features(load_file(str(folder / "model.safetensors")), raw, pixels),
                          atol=1e-4)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_matches_the_loop_reference(version):
    grid = torch.randn(3, 8, 8, 5)
    ours = pixel_shuffle(grid, 0.5, version)
    assert torch.equal(ours, torch.stack([shuffle_reference(g, 2, version) for g in grid]))


def test_the_video_prompt_is_the_published_one(loaded):
    clip = make_random_clip(3, size=48)
    inputs = prepare_inputs(loaded.processor, [clip], QUESTION)
    tokenizer = loaded.processor.tokenizer
    text = tokenizer.decode(inputs["input_ids"][0])
    context = "<IMG_CONTEXT>" * TOKENS_PER_FRAME
    assert text.startswith("<s><|im_start|>system\n你是书生·万象，英文名是InternVL，")
    assert (f"<|im_end|>\n<|im_start|>user\nFrame1: <img>{context}</img>\nFrame2: <img>{context}</img>\n"
            f"Frame3: <img>{context}</img>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n") in text
    assert inputs["pixel_values_videos"].shape == (3, 3, 64, 64)
    assert inputs["vision_blocks"].tolist() == [[0, 1]] * 3
    layout = adapter_for(loaded.model).token_layout(loaded.model.model, inputs["input_ids"],
                                                    {"vision_blocks": inputs["vision_blocks"]})
    assert [(g.frames, g.rows, g.cols) for g in layout.grids] == [(3, 4, 4)]
    assert layout.num_vision_tokens == 3 * TOKENS_PER_FRAME
    # the authors' prune span: every non-video token from the first frame token to the last one
    first, last = int(layout.positions[0]), int(layout.positions[-1])
    assert layout.prune_extra.numel() == (last - first + 1) - layout.num_vision_tokens > 0


def test_images_are_tiled_as_published(loaded):
    assert tile_grids(1, 6)[:3] == [(1, 1), (1, 2), (2, 1)]
    assert closest_grid(200, 100, tile_grids(1, 6), 64) == (2, 1)
    assert closest_grid(448, 448, tile_grids(1, 12), 448) == (1, 1)
    image = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)  # 2:1 -> 2 tiles + thumbnail
    clip = make_random_clip(2, size=48)
    inputs = prepare_inputs(loaded.processor, [clip], QUESTION, images=[image])
    assert inputs["pixel_values"].shape == (3, 3, 64, 64)
    assert inputs["vision_blocks"].tolist() == [[0, 1], [0, 1], [-1, 3]]
    text = loaded.processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<img>" + "<IMG_CONTEXT>" * (3 * TOKENS_PER_FRAME) + "</img>\n" + QUESTION in text
    layout = adapter_for(loaded.model).token_layout(loaded.model.model, inputs["input_ids"],
                                                    {"vision_blocks": inputs["vision_blocks"]})
    assert layout.num_vision_tokens == 2 * TOKENS_PER_FRAME  # the image stays dense


def test_sentencepiece_model_round_trips_and_falls_back_to_bytes(tmp_path):
    pieces = [Piece("<unk>", 0, 2), Piece("<s>", 0, 3), Piece("</s>", 0, 3)]
    pieces += [Piece(f"<0x{b:02X}>", 0, BYTE) for b in range(256)]
    pieces += [Piece(text, -i, NORMAL) for i, text in enumerate(["ab", "abc", "a", "b", "c", "\u2581"])]
    model = SentencePieceModel(pieces, byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
                               pad_id=-1)
    again = read_model(write_model(model, tmp_path / "tokenizer.model"))
    assert again.pieces == pieces and again.pad_id == -1 and not again.add_dummy_prefix and again.byte_fallback
    assert bpe_merges(pieces) == [("a", "b"), ("ab", "c")]
    tokenizer = fast_tokenizer(again)
    assert tokenizer.encode("abc ab\u00e9").tokens == ["abc", "\u2581", "ab", "<0xC3>", "<0xA9>"]
    model.remove_extra_whitespaces = True
    with pytest.raises(ValueError, match="remove_extra_whitespaces"):
        fast_tokenizer(model)


def test_framefusion_counts_follow_the_authors_prune_span(loaded):
    clip = make_random_clip(6, size=48)
    result = ask(loaded, [clip], QUESTION, method="framefusion", budget=0.3,
                 params={"similarity_lower_bound": 1.1}, max_new_tokens=2)  # no merge: a prune at point 1
    stats = result.stats
    assert [s.kind for s in stats.steps] == ["merge", "prune"] and stats.steps[1].point == 1
    text_gone = int((stats.other_removed_at >= 0).sum())
    vision_gone = int((stats.removed_at >= 0).sum())
    assert result.tokens_per_layer[0] == stats.seq_len
    assert result.tokens_per_layer[1:] == [stats.seq_len - vision_gone - text_gone] * 3
    ranked = stats.num_vision_tokens + stats.other_removed_at.numel()  # video tokens and the text between frames
    assert text_gone > 0 and vision_gone + text_gone == ranked - round(ranked * (1 - stats.steps[1].ratio))
    assert result.vision_tokens == 6 * TOKENS_PER_FRAME and result.importance_queries == 1


@pytest.mark.parametrize("method", method_names())
def test_every_method_answers_at_the_budget(loaded, method):
    clip = make_random_clip(8, size=48, static_fraction=0.5)
    result = ask(loaded, [clip], QUESTION, method=method, budget=0.3, max_new_tokens=2)
    assert result.answer_ids and result.vision_tokens > 0
    if method not in ("dense", "uniform", "framefusion"):
        assert result.kept_ratio == pytest.approx(0.3, abs=0.05)
    assert last_stats(loaded.model) is None  # removed after the call


def test_ask_json_through_the_cli(internlm2_dir, video_file):  # noqa: F811
    from typer.testing import CliRunner

    from ffcli.main import app

    result = CliRunner().invoke(app, ["ask", str(video_file), QUESTION, "--model", str(internlm2_dir), "--json",
                                      "--max-new-tokens", "3", "--device", "cpu"], prog_name="framefusion")
    assert result.exit_code == 0, result.stderr
    payload = single_json(result.stdout)
    assert payload["model_info"]["family"] == "InternVL2.5 (original format)"
    assert payload["vision_tokens"] == payload["frames"] * TOKENS_PER_FRAME
    assert len(payload["answer_ids"]) == 3 and len(payload["tokens_per_layer"]) == 4


def test_the_8b_reference_shape_gives_256_tokens_per_448_px_frame():
    from types import SimpleNamespace

    from framefusion.models.internvl_chat import make_processor
    from framefusion.pipeline.random_weights import CONFIGS, parameter_count, reference_config
    from framefusion.tiny.internvl_chat import tiny_tokenizer

    config = reference_config(CONFIGS / "internvl2.5-8b")
    assert config.text_config.num_hidden_layers == 32 and type(config.text_config).__name__ == "LlamaConfig"
    assert config.text_config.rope_parameters == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0}
    assert 8.0e9 < parameter_count(config) < 8.2e9  # InternViT-300M + InternLM2.5-7B + projector
    tokenizer = tiny_tokenizer()
    config.image_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    processor = make_processor(config, tokenizer)
    inputs = prepare_inputs(processor, [make_random_clip(2, size=480)], QUESTION)
    assert inputs["pixel_values_videos"].shape == (2, 3, 448, 448)
    from framefusion.adapters.internvl_chat import InternVLChatAdapter

    layout = InternVLChatAdapter().token_layout(SimpleNamespace(config=config), inputs["input_ids"],
                                                {"vision_blocks": inputs["vision_blocks"]})
    assert [(g.frames, g.rows, g.cols, g.tokens_per_frame) for g in layout.grids] == [(2, 16, 16, 256)]


def test_model_args_override_the_chat_settings_and_unknown_ones_are_refused(internlm2_dir):
    from framefusion.pipeline.loading import ModelLoadError

    loaded = load_model(str(internlm2_dir), device="cpu",
                        model_args={"template": "internlm2-chat", "max_dynamic_patch": "1"})
    prompt = loaded.processor.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<|im_end|><|im_start|>user\nhi<|im_end|><|im_start|>assistant\n")  # InternVL2's sep
    assert loaded.processor.max_dynamic_patch == 1
    with pytest.raises(ModelLoadError, match="no model argument colour"):
        load_model(str(internlm2_dir), device="cpu", model_args={"colour": "red"})
    with pytest.raises(ModelLoadError, match="unknown InternVL conversation template"):
        load_model(str(internlm2_dir), device="cpu", model_args={"template": "vicuna"})
