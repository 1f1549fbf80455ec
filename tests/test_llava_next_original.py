"""LLaVA-NeXT's LlavaQwen checkpoints (LLaVA-Video, LLaVA-OneVision) in their original on-disk format: loading, the
token layout with newline tokens (210 per 384-px frame with grid newlines), the prompt, round trips, every method,
and the CLI. Tiny random checkpoints from framefusion.tiny.llava_next; nothing is downloaded."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from framefusion.adapters import adapter_for
from framefusion.api import reduced
from framefusion.methods import method_names
from framefusion.models import find_format
from framefusion.models.llava_next import load, save_original
from framefusion.models.llava_next.features import pooled_side
from framefusion.pipeline.loading import ModelLoadError, load_model
from framefusion.tiny.llava_next import register_tower, write_tiny_llava_video
from framefusion.video import VideoClip
from framefusion.video.prompting import prepare_inputs

QUESTION = "What is happening in this video?"
HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "against_authors" / "llava_next"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny LLaVA-Video checkpoint (64-px SigLIP grid of 8 x 8 patches: 4 x (4 + 1) = 20 tokens per frame)."""
    return write_tiny_llava_video(tmp_path_factory.mktemp("llava") / "ckpt")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model(str(checkpoint), device="cpu", dtype="fp32")


def clip(frames: int = 4, height: int = 48, width: int = 64, seed: int = 0) -> VideoClip:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    pixels[:, : height // 2] = pixels[0, : height // 2]  # a still half: some tokens repeat
    return VideoClip(frames=pixels, timestamps=np.arange(frames) / 2.0, fps=2.0, duration=frames / 2.0, source="t")


def test_the_original_layout_on_disk_is_recognised_and_loaded_natively(checkpoint, loaded):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaQwenForCausalLM"]
    assert find_format(config).module == "llava_next"  # architectures decide, not transformers' "llava" type
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as handle:
        names = set(handle.keys())
    assert {"model.image_newline", "model.mm_projector.0.weight", "model.mm_projector.2.weight", "lm_head.weight",
            "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
            "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"} <= names
    assert {"vocab.json", "merges.txt", "added_tokens.json", "tokenizer_config.json"} <= {p.name for p in
                                                                                          checkpoint.iterdir()}
    model = loaded.model
    assert model.config.model_type == "llava_qwen" and adapter_for(model).name.startswith("LLaVA-Video")
    assert type(model.model.language_model).__name__ == "Qwen2Model"
    assert type(model.model.vision_tower).__name__ == "SiglipVisionModel"
    assert "not in the local Hugging Face cache" in model.config.vision_config_source  # the so400m fallback


def grid_reference(pooled: torch.Tensor, newline: torch.Tensor, position: str) -> torch.Tensor:
    """The token order of LLaVA-NeXT's video features, one token at a time. pooled [T, s, s, D]."""
    tokens = []
    frames, rows, cols, _ = pooled.shape
    for t in range(frames):
        for r in range(rows):
            tokens += [pooled[t, r, c] for c in range(cols)]
            if position == "grid":
                tokens.append(newline)
        if position == "frame":
            tokens.append(newline)
    if position == "one_token":
        tokens.append(newline)
    return torch.stack(tokens)


@pytest.mark.parametrize("position, per_frame, trailing", [("grid", 20, 0), ("frame", 17, 0), ("one_token", 16, 1),
                                                           ("no_token", 16, 0)])
def test_each_newline_position_gives_the_original_token_order(checkpoint, position, per_frame, trailing):
    model, processor = load(checkpoint, model_args={"mm_newline_position": position})
    video = clip(3)
    inputs = prepare_inputs(processor, [video], QUESTION)
    multimodal = model.model
    with torch.no_grad():
        features = multimodal.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])[0]
        projected = multimodal.encode(inputs["pixel_values_videos"][0])  # [T, 64, D]
        side = multimodal.patches_per_side
        grid = projected.view(3, side, side, -1).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.interpolate(grid, size=[pooled_side(side, model.config.settings)] * 2,
                                                 mode="bilinear").permute(0, 2, 3, 1)
    torch.testing.assert_close(features, grid_reference(pooled, multimodal.image_newline, position))
    placeholders = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert placeholders == 3 * per_frame + trailing == features.shape[0]
    layout = adapter_for(model).token_layout(multimodal, inputs["input_ids"],
                                             adapter_for(model).video_inputs(dict(inputs)))
    assert layout.num_vision_tokens == 3 * per_frame  # one_token's newline after the video is never reduced
    assert layout.grids[0].tokens_per_frame == per_frame


def test_a_384_pixel_frame_is_210_tokens_with_grid_newlines(tmp_path):
    ckpt = write_tiny_llava_video(tmp_path / "ckpt", num_layers=2, image_size=384, patch_size=14, vision_hidden=32,
                                  vision_intermediate=32)
    loaded = load_model(str(ckpt), device="cpu")
    inputs = prepare_inputs(loaded.processor, [clip(2)], QUESTION)
    adapter = adapter_for(loaded.model)
    layout = adapter.token_layout(loaded.model.model, inputs["input_ids"], adapter.video_inputs(dict(inputs)))
    grid = layout.grids[0]
    assert (grid.frames, grid.rows, grid.cols, grid.tokens_per_frame) == (2, 14, 15, 210)
    newline = loaded.model.model.image_newline
    with torch.no_grad():
        embeds = loaded.model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])[0]
    is_newline = (embeds == newline).all(dim=-1)
    assert torch.equal(torch.nonzero(is_newline).flatten(), torch.arange(14, 420, 15))  # the 15th of every row
    average, _ = load(ckpt, model_args={"mm_spatial_pool_mode": "average"})
    assert average.config.settings.mm_spatial_pool_mode == "average"
    assert pooled_side(27, average.config.settings) == 13  # 13 x 14 = 182 per frame, as lmms-eval's default


def test_the_prompt_is_llava_vids_qwen_1_5_conversation(loaded):
    tokenizer, processor = loaded.tokenizer, loaded.processor
    inputs = prepare_inputs(processor, [clip(2)], QUESTION)
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n" + QUESTION
            + "<|im_end|>\n<|im_start|>assistant\n")
    chunks = [tokenizer(piece)["input_ids"] for piece in text.split("<image>")]  # as tokenizer_image_token
    reference = chunks[0] + [-200] + chunks[1]
    ids = inputs["input_ids"][0]
    video = ids == loaded.model.config.video_token_id
    first = int(video.nonzero()[0])
    collapsed = ids[:first].tolist() + [-200] + ids[first + int(video.sum()):].tolist()
    assert collapsed == reference and int(video.sum()) == 2 * 20


def test_time_instruction_and_conversation_follow_model_args(checkpoint):
    _, processor = load(checkpoint, model_args={"add_time_instruction": "true", "conv_template": "qwen_2_5"})
    from framefusion.video.prompting import video_metadata

    video = clip(2)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                        {"type": "text", "text": QUESTION}]}])
    assert "You are Qwen, created by Alibaba Cloud." in prompt
    ids = processor(text=[prompt], videos=[torch.from_numpy(video.frames).permute(0, 3, 1, 2)],
                    video_metadata=[video_metadata(video)])["input_ids"][0]
    text = processor.tokenizer.decode([int(i) for i in ids if i < len(processor.tokenizer)])
    assert ("The video lasts for 1.00 seconds, and 2 frames are uniformly sampled from it. These frames are located "
            "at 0.00s,0.50s.Please answer the following questions related to this video.\n" + QUESTION) in text


def test_unknown_or_invalid_model_args_are_refused(checkpoint):
    with pytest.raises(ModelLoadError, match="no model argument mm_patch_merge_type; known: .*mm_newline_position"):
        load_model(str(checkpoint), device="cpu", model_args={"mm_patch_merge_type": "flat"})
    with pytest.raises(ModelLoadError, match="mm_newline_position='row'"):
        load_model(str(checkpoint), device="cpu", model_args={"mm_newline_position": "row"})


def test_round_trip_keeps_the_original_names_and_the_logits(checkpoint, loaded, tmp_path):
    inputs = prepare_inputs(loaded.processor, [clip(3)], QUESTION)
    with torch.no_grad():
        before = loaded.model(**inputs).logits
    saved = save_original(loaded.model, tmp_path / "copy", tokenizer_folder=checkpoint)
    assert json.loads((saved / "config.json").read_text()) == json.loads((checkpoint / "config.json").read_text())
    with safe_open(str(saved / "model.safetensors"), "pt") as a, safe_open(str(checkpoint / "model.safetensors"),
                                                                          "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118 (not iterable)
    sharded = save_original(loaded.model, tmp_path / "sharded", tokenizer_folder=checkpoint, max_shard_bytes=200_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    for folder in (saved, sharded):
        again = load_model(str(folder), device="cpu")
        with torch.no_grad():
            assert torch.equal(again.model(**inputs).logits, before)


def test_the_tower_config_comes_from_the_hub_cache_when_it_is_there(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    ckpt = write_tiny_llava_video(tmp_path / "ckpt", num_layers=1, vision_heads=8, tower_cache=cache,
                                  vision_tower="framefusion-tiny/siglip-eight-heads")
    fallback, _ = load(ckpt)  # not cached: so400m's 16 heads
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    cached, processor = load(ckpt)
    assert cached.config.vision_config.num_attention_heads == 8
    assert fallback.config.vision_config.num_attention_heads == 16
    assert "config.json from the local Hugging Face cache" in cached.config.vision_config_source
    inputs = prepare_inputs(processor, [clip(2)], QUESTION)
    with torch.no_grad():
        assert not torch.allclose(cached(**inputs).logits, fallback(**inputs).logits)  # the heads matter
    register_tower(cache, "framefusion-tiny/siglip-eight-heads", {"num_hidden_layers": 9, "num_attention_heads": 8,
                                                                  "hidden_size": 64, "image_size": 64,
                                                                  "patch_size": 8, "intermediate_size": 128})
    with pytest.raises(ValueError, match="holds 1 vision-tower layers but mm_vision_select_layer=-2 of a 9-layer"):
        load(ckpt)


def test_every_method_runs_at_its_budget(loaded):
    model, video = loaded.model, clip(6)
    inputs = prepare_inputs(loaded.processor, [video], QUESTION)
    n_v = 6 * 20
    for name in method_names():
        with reduced(model, name, 0.5) as run:
            selected = run.select_frames(video)
            run_inputs = inputs if selected is video else prepare_inputs(loaded.processor, [selected], QUESTION)
            with torch.no_grad():
                out = model.generate(**run_inputs, max_new_tokens=2, do_sample=False)
            stats = run.stats
        assert out.shape[1] == run_inputs["input_ids"].shape[1] + 2, name
        if name not in ("dense", "uniform"):
            assert stats is not None and stats.num_vision_tokens == n_v, name
            assert abs(stats.kept_ratio - 0.5) < 0.05, (name, stats.kept_ratio)


def test_vision_saliency_covers_every_video_token_newlines_included(loaded):
    from framefusion.core.patches import patch_scope
    from framefusion.methods.oneshot import saliency_source

    with patch_scope(loaded.model) as patches:
        score = saliency_source(loaded.model, "visionzip", "attention", patches)
        inputs = prepare_inputs(loaded.processor, [clip(3)], QUESTION)
        with torch.no_grad():
            loaded.model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])
        saliency = score.probe.take()
    assert saliency.shape == (3 * 20,)
    rows = saliency.view(3, 4, 5)
    torch.testing.assert_close(rows[..., 4], rows[..., :4].mean(dim=-1))  # a newline: its row's mean


def test_images_are_tiled_as_anyres_max_and_fill_their_placeholders(loaded):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(70, 150, 3), dtype=np.uint8))
    inputs = prepare_inputs(loaded.processor, [], "Describe the image.", images=[image])
    tiles = int(inputs["image_tiles"][0])
    assert tiles > 2 and inputs["pixel_values"].shape[0] == tiles  # the base view and a grid of tiles
    with torch.no_grad():
        features = loaded.model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                                         image_sizes=inputs["image_sizes"],
                                                         image_tiles=inputs["image_tiles"])[0]
        loaded.model(**inputs)  # the placeholder count and the features agree (else a ValueError)
    assert int((inputs["input_ids"] == loaded.model.config.image_token_id).sum()) == features.shape[0]


def test_framefusion_ask_json_through_the_cli(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from ffcli.main import app
    from framefusion.video import write_video

    video = write_video(tmp_path / "clip.mp4", clip(4, 48, 64).frames, fps=2.0)
    result = CliRunner().invoke(app, ["ask", str(video), QUESTION, "--model", str(checkpoint), "--frames", "4",
                                      "--max-new-tokens", "3", "--device", "cpu", "--json"], prog_name="framefusion")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["vision_tokens"] == 4 * 20 and len(payload["answer_ids"]) >= 1
    assert payload["model_info"]["family"].startswith("LLaVA-Video")
    assert math.isclose(payload["kept_ratio"], 0.3, abs_tol=0.02)
    assert payload["similarity_threshold"] == 0.6  # the paper's LLaVA-Video value
    # --model-arg overrides the checkpoint's config as lmms-eval's llava_vid lets users: no newline tokens
    no_newline = CliRunner().invoke(app, ["ask", str(video), QUESTION, "--model", str(checkpoint), "--frames", "4",
                                          "--max-new-tokens", "1", "--device", "cpu", "--json", "--method", "dense",
                                          "--model-arg", "mm_newline_position=no_token"], prog_name="framefusion")
    assert no_newline.exit_code == 0, no_newline.output
    assert json.loads(no_newline.stdout)["vision_tokens"] == 4 * 16
    wrong = CliRunner().invoke(app, ["ask", str(video), QUESTION, "--model", str(checkpoint), "--device", "cpu",
                                     "--model-arg", "mm_patch_merge_type=flat"], prog_name="framefusion")
    assert wrong.exit_code != 0 and "no model argument mm_patch_merge_type" in wrong.stderr


def test_ask_json_matches_llava_next_and_the_authors_framefusion(tmp_path):
    """The harness's recorded answers of LLaVA-NeXT's code and the authors' FrameFusion (expected.json), for the
    dense model and a regime with a prune step, through `framefusion ask --json` in-process."""
    from typer.testing import CliRunner

    from ffcli.main import app

    sys.path.insert(0, str(HARNESS))
    try:
        import check
    finally:
        sys.path.remove(str(HARNESS))
    ckpt, video = check.prepare(tmp_path)
    for name in ("dense", "merge_then_prune"):
        run = check.EXPECTED["runs"][name]
        result = CliRunner().invoke(app, check.ask_arguments(video, ckpt, run), prog_name="framefusion")
        assert result.exit_code == 0, result.output
        assert check.differences(name, run, json.loads(result.stdout)) == []


def test_a_hub_id_loads_from_the_local_cache_offline(checkpoint, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--lmms-lab--LLaVA-Video-7B-Qwen2"
    shutil.copytree(checkpoint, repo / "snapshots" / ("1" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("lmms-lab/LLaVA-Video-7B-Qwen2", device="cpu")
    assert loaded.model.config.model_type == "llava_qwen" and loaded.name == "lmms-lab/LLaVA-Video-7B-Qwen2"
