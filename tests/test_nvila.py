"""NVILA in VILA's published layout (framefusion/models/nvila): loading, the projector and pooling against loop
references, the token layout, every method, `framefusion ask --json` and the random-weight reference shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from framefusion import apply_framefusion, last_stats, remove_framefusion
from framefusion.adapters import adapter_for
from framefusion.core.patches import patch_scope
from framefusion.methods import apply_method, method_names, select_frames
from framefusion.models import find_format
from framefusion.models.nvila import read_config
from framefusion.models.nvila.modeling import pool_groups
from framefusion.models.nvila.processing import NVILAProcessor
from framefusion.models.nvila.projector import NVILAProjector, fuse_blocks
from framefusion.models.nvila.tiling import merge_chessboard, split_chessboard
from framefusion.models.tiling import closest_grid, tile_grids
from framefusion.pipeline.answer import ask, model_inputs
from framefusion.pipeline.loading import load_model
from framefusion.tiny.nvila import VARIANTS, nvila_tokenizer, save_tiny_checkpoint
from framefusion.video import VideoClip, write_video

QUESTION = "What is happening in the video?"


def clip(frames: int, seed: int = 0, static_rows: int = 0, height: int = 48, width: int = 64) -> VideoClip:
    """Random frames; the top `static_rows` rows the same in every frame."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    data[:, :static_rows] = data[0, :static_rows]
    return VideoClip(data, np.arange(frames) * 0.25, 4.0, frames * 0.25)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The three published layouts as tiny checkpoints (4 layers)."""
    root = tmp_path_factory.mktemp("nvila")
    return {variant: save_tiny_checkpoint(root / variant, variant, seed=i) for i, variant in enumerate(VARIANTS)}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """Each layout loaded through framefusion.pipeline.loading.load_model."""
    return {variant: load_model(str(path), device="cpu", dtype="fp32") for variant, path in checkpoints.items()}


# ---------------------------------------------------------------- layout on disk and loading


def test_checkpoint_is_in_the_published_layout(checkpoints):
    folder = checkpoints["nvila-8b-video"]
    top = json.loads((folder / "config.json").read_text())
    assert top["architectures"] == ["LlavaLlamaModel"] and top["model_type"] == "llava_llama"
    assert {"llm_cfg", "vision_tower_cfg", "mm_projector_cfg"} <= set(top)
    assert top["video_encoder"] == {"_target_": "llava.model.encoders.TSPVideoEncoder", "pool_sizes": [[8, 1, 1]]}
    for part in ("llm", "vision_tower", "mm_projector"):
        assert (folder / part / "config.json").is_file() and (folder / part / "model.safetensors").is_file()
    assert (folder / "llm" / "tokenizer_config.json").is_file()
    assert (folder / "vision_tower" / "preprocessor_config.json").is_file()
    assert all(name.startswith("vision_model.") for name in load_file(folder / "vision_tower" / "model.safetensors"))
    assert set(load_file(folder / "mm_projector" / "model.safetensors")) == {
        "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias", "layers.4.weight", "layers.4.bias"}
    assert find_format(top).name == "NVILA"


def test_the_three_layouts_differ_as_published(loaded):
    lite, video, lite15 = (loaded[v].model for v in ("nvila-lite-2b", "nvila-8b-video", "nvila-lite-15b-video"))
    assert lite.model.mm_projector.projector_type == "mlp_downsample_3x3_fix"
    assert video.model.mm_projector.projector_type == "mlp_downsample_2x2_fix"
    assert lite15.model.mm_projector.projector_type == "mlp_downsample_3x3_fix"
    assert video.config.video_encoder.pool_sizes == ((8, 1, 1),) and lite.config.video_encoder.pool_sizes == ((1, 1, 1),)
    assert lite.lm_head.weight is lite.model.language_model.embed_tokens.weight  # Qwen2-1.5B ties its embeddings
    assert video.lm_head.weight is not video.model.language_model.embed_tokens.weight
    assert lite15.config.text_config.rms_norm_eps == 1e-5
    assert video.config.num_time_tokens == 100 and "<t99>" in loaded["nvila-8b-video"].tokenizer.get_vocab()


def test_load_model_builds_it_natively(loaded):
    item = loaded["nvila-8b-video"]
    assert item.family == "NVILA" and item.model.config.model_type == "llava_llama"
    assert type(item.model.model.language_model).__name__ == "Qwen2Model"
    assert type(item.model.model.vision_tower).__name__ == "SiglipVisionModel"
    assert adapter_for(item.model).name == "NVILA"
    assert item.describe()["num_layers"] == 4


def test_hub_id_loads_from_the_offline_cache(checkpoints, tmp_path, monkeypatch):
    """`--model Efficient-Large-Model/NVILA-8B-Video` reads the whole snapshot (sub-folders too) from the cache."""
    import shutil

    import huggingface_hub.constants as hub

    repo = tmp_path / "hub" / "models--Efficient-Large-Model--NVILA-8B-Video"
    shutil.copytree(checkpoints["nvila-8b-video"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    item = load_model("Efficient-Large-Model/NVILA-8B-Video", device="cpu", dtype="fp32")
    assert item.family == "NVILA" and item.name == "Efficient-Large-Model/NVILA-8B-Video"


def test_weights_round_trip(checkpoints, loaded):
    """Every tensor of the three sub-folders is in the model under its published name (read back bit for bit)."""
    folder, model = checkpoints["nvila-8b-video"], loaded["nvila-8b-video"].model
    ours = model.state_dict()
    where = {"llm": lambda n: ("lm_head.weight" if n == "lm_head.weight" else f"model.language_model.{n[6:]}"),
             "vision_tower": lambda n: "model.vision_tower." + n.removeprefix("vision_model."),
             "mm_projector": lambda n: f"model.mm_projector.{n}"}
    count = 0
    for part, name_of in where.items():
        for name, tensor in load_file(folder / part / "model.safetensors").items():
            assert torch.equal(ours[name_of(name)], tensor), name
            count += 1
    assert count == len({id(p) for p in model.parameters()})


# ---------------------------------------------------------------- algorithms against loop references


@pytest.mark.parametrize("k,side", [(2, 8), (2, 7), (3, 8), (3, 9)])
def test_block_fusion_matches_a_loop(k, side):
    features = torch.randn(2, side * side, 5)
    s = math.ceil(side / k)
    expected = torch.zeros(2, s * s, k * k * 5)
    grid = features.view(2, side, side, 5)
    for i in range(s):
        for j in range(s):
            parts = []
            for di in range(k):
                for dj in range(k):
                    r, c = i * k + di, j * k + dj
                    parts.append(grid[:, r, c] if r < side and c < side else torch.zeros(2, 5))
            expected[:, i * s + j] = torch.cat(parts, dim=-1)
    assert torch.equal(fuse_blocks(features, k), expected)


def test_projector_parameter_names_and_widths():
    names = {n: tuple(p.shape) for n, p in NVILAProjector("mlp_downsample_3x3_fix", 8, 16).named_parameters()}
    assert names == {"layers.1.weight": (72,), "layers.1.bias": (72,), "layers.2.weight": (24, 72),
                     "layers.2.bias": (24,), "layers.4.weight": (24,), "layers.4.bias": (24,),
                     "layers.5.weight": (16, 24), "layers.5.bias": (16,), "layers.7.weight": (16, 16),
                     "layers.7.bias": (16,)}
    assert set(dict(NVILAProjector("mlp2x_gelu", 8, 16).named_parameters())) == {
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"}


def test_temporal_spatial_pooling_matches_a_loop():
    features = torch.randn(16, 16, 3)  # 16 frames of 4 x 4 tokens
    pooled = pool_groups(features, (8, 2, 1))
    grid = features.view(16, 4, 4, 3)
    expected = torch.stack([torch.stack([grid[g * 8:(g + 1) * 8, 2 * r:2 * r + 2, c].mean(dim=(0, 1))
                                         for r in range(2) for c in range(4)]) for g in range(2)])
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_chessboard_split_merge_round_trip_and_order():
    maps = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    tiles = split_chessboard(maps, 2, 3)  # [2*3*2, 3, 2, 2]: tile (i, j) of every map, row by row
    assert torch.equal(tiles[(1 * 3 + 2) * 2 + 1], maps[1, :, 2:4, 4:6])
    assert torch.equal(merge_chessboard(tiles, 2, 3), maps)


def test_tile_grid_choice():
    grids = tile_grids(1, 4)
    assert set(grids) == {(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (4, 1)} and len(grids) == 8
    assert [c * r for c, r in grids] == sorted(c * r for c, r in grids)
    assert closest_grid(400, 100, tile_grids(1, 12), 100) == (4, 1)  # 4:1 image -> 4 columns, 1 row
    assert closest_grid(100, 100, tile_grids(9, 12), 100) == (3, 3)


# ---------------------------------------------------------------- prompt, layout, errors


def test_prompt_and_video_tokens_of_one_group(loaded):
    """8 frames on the 8B-Video layout: one group of 8 averaged frames, 4 x 4 tokens and its "\\n" = 17 tokens
    (the real checkpoint: 16 x 16 + 1 = 257)."""
    item = loaded["nvila-8b-video"]
    inputs = model_inputs(item, [clip(8)], QUESTION)
    text = item.tokenizer.decode(inputs["input_ids"][0])
    assert "<|im_start|>user\n<vila/video>" in text and text.endswith("<|im_start|>assistant\n")
    layout = adapter_for(item.model).token_layout(item.model.model, inputs["input_ids"], {"video_grids": inputs["video_grids"]})
    assert layout.num_vision_tokens == 17
    assert [(g.frames, g.rows, g.cols, g.trailing, g.raw_frames_per_frame) for g in layout.grids] == [(1, 4, 4, 1, 8)]
    newline = item.tokenizer("\n").input_ids[0]
    assert int(inputs["input_ids"][0, layout.positions[-1]]) == newline  # the group's "\n" is a video token
    rows, _cols = layout.rows_cols()
    assert rows[-1] == 4 and layout.patch[-1] == 16  # it trails the 4 x 4 grid
    assert inputs["pixel_values_videos"].shape == (8, 3, 112, 112)


def test_lite_layout_has_a_newline_per_frame(loaded):
    item = loaded["nvila-lite-2b"]
    inputs = model_inputs(item, [clip(8)], QUESTION)
    layout = adapter_for(item.model).token_layout(item.model.model, inputs["input_ids"], {"video_grids": inputs["video_grids"]})
    assert layout.num_vision_tokens == 8 * (9 + 1)
    assert [(g.frames, g.rows, g.cols, g.trailing) for g in layout.grids] == [(8, 3, 3, 1)]


def test_frames_not_a_multiple_of_the_pool_are_refused(loaded):
    with pytest.raises(ValueError, match="multiple of 8"):
        model_inputs(loaded["nvila-8b-video"], [clip(12)], QUESTION)


def test_video_features_are_written_over_the_placeholders(loaded):
    item = loaded["nvila-8b-video"]
    model = item.model
    inputs = model_inputs(item, [clip(16)], QUESTION)
    captured = {}
    handle = model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: captured.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    mask = inputs["input_ids"][0] == model.config.video_token_id
    with torch.no_grad():
        features = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grids"])
        text = model.model.get_input_embeddings()(inputs["input_ids"])[0, ~mask]
    assert torch.equal(captured["embeds"][0, mask], features) and torch.equal(captured["embeds"][0, ~mask], text)


def test_dynamic_s2_image_and_video(tmp_path):
    """A dynamic-S2 checkpoint: one image becomes multi-scale tiles (1 + 4 + 12 for a 4:3 image), merged to a
    3 x 4 grid of 4 x 4 tokens and a "\\n"; video frames take the tile map on every scale's channels."""
    folder = save_tiny_checkpoint(tmp_path / "s2", "nvila-8b-video", dynamic_s2=True, image_aspect_ratio="dynamic_s2")
    item = load_model(str(folder), device="cpu", dtype="fp32")
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    result = ask(item, [], QUESTION, method="dense", images=[image], max_new_tokens=2)
    inputs = model_inputs(item, [], QUESTION, images=[image])
    assert inputs["pixel_values"].shape[0] == 1 + 4 + 12 and inputs["image_grids"].tolist() == [[2, 3, 4]]
    assert int((inputs["input_ids"] == item.model.config.image_token_id).sum()) == 12 * 16
    assert len(result.answer_ids) == 2
    assert ask(item, [clip(8)], QUESTION, method="framefusion", max_new_tokens=1).vision_tokens == 17


# ---------------------------------------------------------------- reduction


def test_one_group_only_prunes_and_more_groups_merge(loaded):
    item = loaded["nvila-8b-video"]
    model = item.model
    for frames, merged in ((8, False), (16, True)):
        inputs = model_inputs(item, [clip(frames, static_rows=48)], QUESTION)  # identical frames
        apply_framefusion(model, cost=0.3)
        try:
            with torch.no_grad():
                model(**inputs)
            stats = last_stats(model)
        finally:
            remove_framefusion(model)
        merges = sum(s.removed for s in stats.steps if s.kind == "merge")
        assert (merges > 0) == merged, (frames, stats.steps)
        assert any(s.kind == "prune" for s in stats.steps) or merged


@pytest.mark.parametrize("variant,frames", [("nvila-8b-video", 32), ("nvila-lite-2b", 8)])
def test_every_method_runs_at_the_budget(loaded, variant, frames):
    item = loaded[variant]
    video = clip(frames, static_rows=24)
    for method in method_names():
        if method == "dense":
            continue
        result = ask(item, [video], QUESTION, method=method, budget=0.5, max_new_tokens=1)
        assert 0 < result.kept_ratio <= 1, method
        if method not in ("evs", "uniform", "streamingllm"):  # EVS keeps whole first frames; uniform whole groups
            assert abs(result.kept_ratio - 0.5) < 0.1, (method, result.kept_ratio)


def test_attention_saliency_covers_every_video_token(loaded):
    """The vision-encoder attention probe (VisionZip, FastVID, HoliTom): one value per layout token, in layout
    order; each group's "\n" gets the mean of its group's tokens."""
    item = loaded["nvila-8b-video"]
    inputs = model_inputs(item, [clip(16)], QUESTION)
    with patch_scope(item.model) as patches:
        probe = adapter_for(item.model).vision_probe(item.model, patches)
        with torch.no_grad():
            item.model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                                video_grids=inputs["video_grids"])
        saliency = probe.take()
    assert saliency.shape == (34,) and bool(torch.isfinite(saliency).all())
    groups = saliency.view(2, 17)  # layout order: each group's 16 tokens, then its "\n"
    assert torch.allclose(groups[:, 16], groups[:, :16].mean(dim=1))
    result = ask(item, [clip(16)], QUESTION, method="visionzip", budget=0.5, params={"saliency": "attention"},
                 max_new_tokens=1)
    assert result.vision_tokens == 34 and abs(result.kept_ratio - 0.5) < 0.1


def test_visualize_maps_the_grid_tokens_only(loaded):
    """The "\n" of a group covers no pixels: the frame maps hold the 4 x 4 grid tokens of each group."""
    from framefusion.pipeline.visualize import frame_token_maps

    item = loaded["nvila-8b-video"]
    result = ask(item, [clip(16, static_rows=24)], QUESTION, method="framefusion", max_new_tokens=1)
    maps = frame_token_maps(result.stats, 0, 16, 48, 64)
    assert len(maps) == 16 and maps[0] is maps[7] and maps[8] is maps[15]  # 8 frames per group
    assert sorted(np.unique(np.concatenate([maps[0], maps[8]]))) == [*range(16), *range(17, 33)]


def test_uniform_keeps_whole_groups(loaded):
    model = loaded["nvila-8b-video"].model
    apply_method(model, "uniform", budget=0.5)
    try:
        assert select_frames("uniform", clip(32), 0.5, model).num_frames == 16
    finally:
        remove_framefusion(model)


# ---------------------------------------------------------------- command line and reference shapes


def test_cli_ask_json(checkpoints, tmp_path):
    from ffcli.main import app

    data = clip(16, static_rows=24).frames
    video = write_video(tmp_path / "clip.mp4", data, fps=4.0)
    result = CliRunner().invoke(app, ["ask", str(video), QUESTION, "--model", str(checkpoints["nvila-8b-video"]),
                                      "--device", "cpu", "--frames", "16", "--max-new-tokens", "3", "--json"],
                                prog_name="framefusion", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert payload["vision_tokens"] == 34 and len(payload["answer_ids"]) == 3
    assert payload["model_info"]["family"] == "NVILA" and len(payload["tokens_per_layer"]) == 4


def test_reference_shape_of_nvila_8b_video_gives_257_tokens_for_8_frames():
    """The shipped nvila-8b-video config (SigLIP 448 / 14, 2 x 2 fusion, 8-frame TSP pooling): 8 frames of 448 px
    are 256 tokens and one "\\n"."""
    from framefusion.pipeline.random_weights import config_source

    folder, _family = config_source("nvila-8b-video")
    config = read_config(folder)
    side = NVILAProjector(config.projector_type, 8, 8).tokens_per_side(config.patches_per_side)
    processor = NVILAProcessor(config, nvila_tokenizer(), side)
    frames = np.zeros((8, 448, 448, 3), dtype=np.uint8)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                          {"type": "text", "text": "Q"}]}])
    ids = processor(text=[prompt], videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)])["input_ids"][0]
    assert side == 16 and int((ids == processor.video_token_id).sum()) == 256
    assert config.text_config.num_hidden_layers == 28 and config.vision_config.num_hidden_layers == 27
