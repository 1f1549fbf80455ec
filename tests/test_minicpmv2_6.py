"""MiniCPM-V 2.6 in its original remote-code format: loading, prompt layout, weights, resampler, NaViT positions,
FrameFusion's frame unit, every method and the CLI, on tiny checkpoints written in the original layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import single_json
from typer.testing import CliRunner

from ffcli.main import app
from framefusion.adapters.minicpmv2_6 import MiniCPMV2_6Adapter
from framefusion.api import apply_framefusion, last_stats, remove_framefusion
from framefusion.methods import method_names
from framefusion.models import find_format
from framefusion.models.minicpmv import parse_config, read_settings
from framefusion.models.minicpmv.processor import MiniCPMV26Processor
from framefusion.models.minicpmv.resampler import Resampler, sincos_2d
from framefusion.models.minicpmv.slicing import fit_size, grid_size, slice_grid
from framefusion.models.minicpmv.vision import navit_position_ids
from framefusion.models.minicpmv.weights import original_tensors, save_original_weights, to_original, to_ours
from framefusion.pipeline import ask
from framefusion.pipeline.loading import UnsupportedModelError, load_model
from framefusion.pipeline.random_weights import CONFIGS
from framefusion.tiny.minicpmv import TinyMiniCPMV, save_tiny_minicpmv2_6
from framefusion.tiny.tokenizer import build_tokenizer
from framefusion.video import VideoClip, write_video
from framefusion.video.prompting import prepare_inputs

SIZES = TinyMiniCPMV()  # 4 layers, hidden 128, 16 queries per slice, slices of 56 x 56 pixels
Q = SIZES.query_num
FRAMES = 6
QUESTION = "What is happening?"


def clip_of(width: int, height: int = 56, frames: int = FRAMES, seed: int = 0) -> VideoClip:
    """Random frames whose left half stays still (so some tokens merge)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    pixels[:, :, : width // 2] = pixels[0, :, : width // 2]
    return VideoClip(frames=pixels, timestamps=np.arange(frames) / 2.0, fps=2.0, duration=frames / 2.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_minicpmv2_6(tmp_path_factory.mktemp("minicpmv") / "ckpt", SIZES)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model(str(checkpoint), device="cpu")


def test_only_minicpm_v_2_6_configs_are_this_format():
    published = json.loads((CONFIGS / "minicpm-v-2.6" / "config.json").read_text())
    assert find_format(published).name == "MiniCPM-V 2.6"
    for other in ({**published, "version": 2.5}, {**published, "version": 4.5}, {**published, "architectures": ["MiniCPMO"]},
                  json.loads((CONFIGS / "minicpm-v-4.6" / "config.json").read_text())):
        assert find_format(other) is None
    config = parse_config(published)
    assert (config.text_config.num_hidden_layers, config.text_config.hidden_size, config.resampler_heads,
            config.query_num, config.vision_config.num_hidden_layers) == (28, 3584, 28, 64, 27)


def test_another_minicpmv_version_is_refused_by_name(checkpoint, tmp_path):
    folder = tmp_path / "v2_5"
    folder.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": 2.5}))
    with pytest.raises(UnsupportedModelError, match="minicpmv"):
        load_model(str(folder), device="cpu")


def test_loads_every_weight_under_its_original_name(checkpoint, loaded):
    model = loaded.model
    assert loaded.family == "MiniCPM-V 2.6" and model.config.model_type == "minicpmv2_6"
    ours = dict(model.named_parameters())
    names = []
    for original, tensor in original_tensors(checkpoint):
        names.append(original)
        assert torch.equal(ours[to_ours(original)], tensor), original
    assert sorted(names) == sorted(to_original(name) for name in ours)
    assert {name.split(".")[0] for name in names} == {"vpm", "resampler", "llm"}
    assert not any(b.is_meta for b in model.buffers())


def test_weights_round_trip_through_the_original_names(checkpoint, loaded, tmp_path):
    folder = tmp_path / "again"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((checkpoint / name).read_bytes())
    save_original_weights(loaded.model, folder)
    again = load_model(str(folder), device="cpu")
    inputs = prepare_inputs(loaded.processor, [clip_of(56)], QUESTION)
    with torch.no_grad():
        assert torch.equal(loaded.model(**inputs).logits, again.model(**inputs).logits)


def test_a_frame_is_its_slices_of_query_num_tokens(loaded):
    tokenizer = loaded.processor.tokenizer
    inputs = prepare_inputs(loaded.processor, [clip_of(56)], QUESTION)
    text = tokenizer.decode(inputs["input_ids"][0])
    frame = "<image>" + "<unk>" * Q + "</image>"
    assert text.count("<unk>") == FRAMES * Q
    assert "\n".join([frame] * FRAMES) + "\n" + QUESTION in text  # frames then the question, newline-separated
    assert inputs["tgt_sizes_videos"].tolist() == [[4, 4]] * FRAMES
    layout = MiniCPMV2_6Adapter().token_layout(loaded.model.model, inputs["input_ids"],
                                               MiniCPMV2_6Adapter().video_inputs(dict(inputs)))
    assert layout.num_vision_tokens == FRAMES * Q and layout.grids[0].tokens_per_frame == Q
    wide = prepare_inputs(loaded.processor, [clip_of(112)], QUESTION)  # 2 x 1 slices besides the thumbnail
    text = tokenizer.decode(wide["input_ids"][0])
    cell = "<slice>" + "<unk>" * Q + "</slice>"
    assert text.count(frame + cell + cell) == FRAMES and wide["video_shape"].tolist() == [[FRAMES, 3]]
    assert wide["tgt_sizes_videos"][:3].tolist() == [[3, 6], [4, 4], [4, 4]]  # thumbnail 84 x 42, two 56 x 56


def test_images_are_sliced_and_numbered_as_the_original(loaded):
    image = clip_of(112, 112, frames=1).frames[0]
    tokenizer = loaded.processor.tokenizer
    alone = prepare_inputs(loaded.processor, [], QUESTION, images=[image])  # 4x the scale area: a 2 x 2 grid
    cell = "<slice>" + "<unk>" * Q + "</slice>"
    thumbnail = "<image_id>0</image_id><image>" + "<unk>" * Q + "</image>"
    assert thumbnail + cell + cell + "\n" + cell + cell + "\n" + QUESTION in tokenizer.decode(alone["input_ids"][0])
    both = prepare_inputs(loaded.processor, [clip_of(56)], QUESTION, images=[image])  # the video recipe for both
    text = tokenizer.decode(both["input_ids"][0])
    assert "<image_id>" not in text and both["slice_video"].tolist() == [0] * FRAMES + [-1] * 3  # 2 slices at most
    with torch.no_grad():
        for inputs in (alone, both):
            assert torch.isfinite(loaded.model(**inputs).logits).all()


def test_the_video_slice_count_is_a_model_argument(checkpoint):
    loaded = load_model(str(checkpoint), device="cpu", model_args={"video_max_slice_nums": "1"})
    inputs = prepare_inputs(loaded.processor, [clip_of(112)], QUESTION)
    assert inputs["video_shape"].tolist() == [[FRAMES, 1]]


def test_framefusion_reads_frames_as_the_authors_unit(loaded):
    model, inputs = loaded.model, prepare_inputs(loaded.processor, [clip_of(56)], QUESTION)
    apply_framefusion(model, cost=0.3, similarity_lower_bound=0.9)
    try:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        stats = last_stats(model)
    finally:
        remove_framefusion(model)
    unit = Q + 3  # the queries, "</image>", the newline and the next frame's "<image>"
    assert stats.num_vision_tokens == FRAMES * unit - 1 and stats.grids[0].tokens_per_frame == unit
    first = int(torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id)[0])
    assert stats.vision_positions.tolist() == list(range(first, first + FRAMES * unit - 1))
    assert abs(stats.kept_ratio - 0.3) < 0.02 and stats.importance_queries == 1
    assert "_framefusion_authors_frame_unit" not in model.model.__dict__  # removed with FrameFusion


def test_resampler_position_embedding_against_a_plain_loop():
    rows, cols, channels = 3, 5, 16
    quarter = channels // 4
    expected = torch.zeros(rows * cols, channels)
    for r in range(rows):
        for c in range(cols):
            for k in range(quarter):
                frequency = 1.0 / 10000 ** (k / quarter)
                expected[r * cols + c, k] = math.sin(c * frequency)  # first half: the column
                expected[r * cols + c, quarter + k] = math.cos(c * frequency)
                expected[r * cols + c, 2 * quarter + k] = math.sin(r * frequency)  # second half: the row
                expected[r * cols + c, 3 * quarter + k] = math.cos(r * frequency)
    assert torch.allclose(sincos_2d(rows, cols, channels), expected, atol=1e-6)


def test_resampler_adds_positions_to_the_keys_only():
    torch.manual_seed(0)
    resampler = Resampler(query_num=4, embed_dim=8, num_heads=2, vision_dim=6).eval()
    for p in resampler.parameters():
        torch.nn.init.normal_(p)
    features = torch.randn(1, 6, 6)  # a 2 x 3 grid
    values = resampler.ln_kv(resampler.kv_proj(features))[0]
    keys = values + sincos_2d(2, 3, 8)
    queries = resampler.ln_q(resampler.query)
    w_q, w_k, w_v = resampler.attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = resampler.attn.in_proj_bias.chunk(3)
    q, k, v = queries @ w_q.T + b_q, keys @ w_k.T + b_k, values @ w_v.T + b_v
    heads = [torch.softmax(q[:, h * 4:(h + 1) * 4] @ k[:, h * 4:(h + 1) * 4].T / 2.0, dim=-1) @ v[:, h * 4:(h + 1) * 4]
             for h in range(2)]
    attended = resampler.attn.out_proj(torch.cat(heads, dim=-1))
    expected = resampler.ln_post(attended) @ resampler.proj
    with torch.no_grad():
        assert torch.allclose(resampler(features, 2, 3)[0], expected, atol=1e-5)


@pytest.mark.parametrize("length", [1, 3, 4, 13, 24, 25, 32, 49, 58, 77])
def test_navit_buckets_are_the_exact_fraction_but_at_ties(length):
    side = 70
    rows = navit_position_ids(length, 1, side) // side  # [length] bucket of each row
    exact = torch.tensor([side * i // length for i in range(length)])
    ties = torch.tensor([side * i % length == 0 for i in range(length)])
    assert torch.equal(rows[~ties], exact[~ties])  # off a boundary the bucket is floor(70 i / n)
    assert bool(((rows - exact)[ties].abs() <= 1).all())  # on one, float rounding may pick the bucket below
    assert navit_position_ids(2, 3, side).tolist() == [0, 23, 46, 35 * 70, 35 * 70 + 23, 35 * 70 + 46]


def test_slicing_follows_the_original_geometry():
    assert slice_grid((448, 448), 448, 2) is None and fit_size((448, 448), 448, 14, allow_upscale=True) == (448, 448)
    assert fit_size((300, 200), 448, 14, allow_upscale=True) == (546, 364)  # small images are upscaled
    assert slice_grid((640, 360), 448, 2) == (2, 1)  # a 16:9 frame: two slices side by side
    assert slice_grid((1344, 1344), 448, 9) == (3, 3)
    assert grid_size((640, 360), (2, 1), 448, 14) == (840, 476)  # two 420 x 476 slices
    assert fit_size((640, 360), 448, 14) == (602, 336)  # its thumbnail


@pytest.mark.parametrize("method", method_names())
def test_every_method_runs_at_the_budget(loaded, method):
    params = {"saliency": "norm"} if method in ("visionzip", "fastvid", "holitom", "flashvid") else {}
    result = ask(loaded, clip_of(56, frames=8), QUESTION, method=method, budget=0.5, params=params, max_new_tokens=2)
    assert len(result.answer_ids) == result.generated_tokens > 0
    if method == "uniform":  # whole frames: round(0.5 * 8) of 8
        assert result.frames == 4
    elif method != "dense":
        assert abs(result.kept_ratio - 0.5) < 0.03, (method, result.kept_ratio)


def test_vision_attention_saliency_names_the_alternative(loaded):
    with pytest.raises(ValueError, match="saliency='norm'"):
        ask(loaded, clip_of(56), QUESTION, method="visionzip", budget=0.5, max_new_tokens=1)


def test_token_id_zero_is_masked_as_the_original_does(loaded):
    inputs = prepare_inputs(loaded.processor, [clip_of(56)], "What<|endoftext|> is happening?")
    assert int((inputs["attention_mask"] == 0).sum()) == 1  # "<|endoftext|>" is id 0 here ("!" in Qwen2's vocabulary)
    assert ask(loaded, clip_of(56), "What<|endoftext|> is happening?", method="dense", max_new_tokens=1).answer_ids
    with pytest.raises(ValueError, match="token id 0"):
        ask(loaded, clip_of(56), "What<|endoftext|> is happening?", method="framefusion", max_new_tokens=1)


def test_ask_json_and_visualize_through_the_cli(checkpoint, tmp_path):
    video = write_video(tmp_path / "clip.mp4", clip_of(56, frames=8).frames, fps=4.0)
    runner = CliRunner()
    outputs = {}
    for method in ("dense", "framefusion"):
        done = runner.invoke(app, ["ask", str(video), QUESTION, "--model", str(checkpoint), "--frames", "8",
                                   "--method", method, "--max-new-tokens", "3", "--json"])
        assert done.exit_code == 0, done.output
        outputs[method] = single_json(done.stdout)
    dense, fused = outputs["dense"], outputs["framefusion"]
    assert dense["model_info"]["family"] == "MiniCPM-V 2.6" and dense["vision_tokens"] == 8 * Q
    assert fused["vision_tokens"] == 8 * (Q + 3) - 1 and len(fused["tokens_per_layer"]) == SIZES.num_layers
    assert all(isinstance(i, int) for i in dense["answer_ids"] + fused["answer_ids"])
    done = runner.invoke(app, ["visualize", str(video), "--model", str(checkpoint), "--frames", "4", "--out",
                               str(tmp_path / "vis")])  # frames of the authors' unit: a short last frame
    assert done.exit_code == 0, done.output
    assert (tmp_path / "vis" / "merged_blank.png").is_file()


def test_the_published_preprocessing_gives_64_tokens_per_448_pixel_frame():
    settings = read_settings(CONFIGS / "minicpm-v-2.6", 64)
    processor = MiniCPMV26Processor(build_tokenizer(family="minicpmv2_6"), settings)
    frames = torch.zeros(2, 3, 448, 448, dtype=torch.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    inputs = processor(text=[processor.apply_chat_template(messages)], videos=[frames])
    unk = processor.tokenizer.convert_tokens_to_ids("<unk>")
    assert int((inputs["input_ids"] == unk).sum()) == 2 * 64
    assert inputs["tgt_sizes_videos"].tolist() == [[32, 32], [32, 32]]
