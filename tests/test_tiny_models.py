"""Tiny random checkpoints of every family: build, prompt, forward, generate, save and reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import make_random_clip
from packaging.version import Version
from transformers import AutoModelForImageTextToText, AutoProcessor

from framefusion.tiny import FAMILIES, build_tiny_model, build_tokenizer, model_class, save_tiny_checkpoint
from framefusion.video.prompting import prepare_inputs, video_metadata

QUESTION = "What happens in the video?"
# MiniCPM-V's video processor stacks a prompt's videos into one tensor before transformers 5.21
MINICPM_FLAT_VIDEOS = Version(transformers.__version__) >= Version("5.21")

# Video placeholder tokens for one 8-frame 64x64 clip with the default tiny sizes.
EXPECTED_VIDEO_TOKENS = {
    "qwen2_vl": 4 * 16,  # 2 frames per temporal patch, 8x8 patches merged 2x2
    "qwen2_5_vl": 4 * 16,
    "qwen3_vl": 4 * 16,  # plus "<t seconds><|vision_start|>...<|vision_end|>" text around each temporal patch
    "llava_onevision": 8 * 16 + 1,  # 8x8 patches pooled to 4x4 per frame, one newline token per video
    "llava_next_video": 8 * 16,  # 8x8 patches average-pooled to 4x4 per frame
    "internvl": 8 * 16,  # "FrameN: <img>" + 16 <IMG_CONTEXT> (pixel shuffle of 8x8) + "</img>" per frame
    "qwen3_5": 4 * 16,  # Qwen3-VL's layout
    "minicpmv4_6": 8 * 16,  # frames upscaled to 128x128: 16x16 patches, merged 4x4 per side: 4x4 per frame
    "minicpmv4_7": 8 * 16,
}


def video_token_id(processor) -> int:
    """The placeholder id that video features replace (InternVL reuses its image context token)."""
    return getattr(processor, "video_token_id", None) or processor.image_token_id


def run_model(model, inputs):
    """Forward pass + 3 greedy tokens; checks shapes and returns the logits [1, L, V]."""
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert logits.shape[:2] == (1, length) and torch.isfinite(logits).all()
    assert length < generated.shape[1] <= length + 3
    assert torch.equal(generated[:, :length], inputs["input_ids"])
    return logits


@pytest.mark.parametrize("family", FAMILIES)
def test_video_prompt_forward_and_generate(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    assert model_class(family) is type(model)
    text = model.config.get_text_config()
    assert text.num_key_value_heads < text.num_attention_heads  # GQA
    assert text.vocab_size == len(processor.tokenizer)

    inputs = prepare_inputs(processor, [make_random_clip(num_frames=8, size=64)], QUESTION)
    ids = inputs["input_ids"][0]
    assert int((ids == video_token_id(processor)).sum()) == EXPECTED_VIDEO_TOKENS[family]
    if family.startswith("qwen"):
        assert torch.equal(inputs["mm_token_type_ids"][0] == 2, ids == processor.video_token_id)
    logits = run_model(model, inputs)
    assert logits.shape[-1] == text.vocab_size


@pytest.mark.parametrize("family", FAMILIES)
def test_two_videos_in_one_prompt(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    clips = [make_random_clip(seed=1), make_random_clip(seed=2)]
    inputs = prepare_inputs(processor, clips, "Which video is brighter?")
    count = int((inputs["input_ids"][0] == video_token_id(processor)).sum())
    assert count == 2 * EXPECTED_VIDEO_TOKENS[family]
    run_model(model, inputs)


@pytest.mark.parametrize("family", FAMILIES)
def test_videos_with_different_frame_counts(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    clips = [make_random_clip(num_frames=8), make_random_clip(num_frames=4, seed=1)]
    if family.startswith("qwen") or (family.startswith("minicpm") and MINICPM_FLAT_VIDEOS):  # flat patch lists
        run_model(model, prepare_inputs(processor, clips, QUESTION))
    else:  # [N, T, C, H, W] stacking: our clear error
        with pytest.raises(ValueError, match="same number of frames"):
            prepare_inputs(processor, clips, QUESTION)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_and_video(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    image = np.random.default_rng(3).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    inputs = prepare_inputs(processor, [make_random_clip()], "Is the picture in the video?", images=[image])
    assert "pixel_values" in inputs
    run_model(model, inputs)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only(family, tiny_model_factory):
    model, processor = tiny_model_factory(family)
    inputs = prepare_inputs(processor, [], "Say hello.", system="You are terse.")
    assert not any(key.startswith("pixel_values") for key in inputs)
    run_model(model, inputs)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
def test_save_and_reload_gives_identical_logits(family, tiny_model_factory, tmp_path):
    model, processor = tiny_model_factory(family)
    save_tiny_checkpoint(family, tmp_path)  # same default arguments and seed as the cached model
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    assert type(loaded) is type(model) and type(loaded_processor) is type(processor)

    clip = make_random_clip()
    inputs = prepare_inputs(processor, [clip], QUESTION)
    loaded_inputs = prepare_inputs(loaded_processor, [clip], QUESTION)
    assert inputs.keys() == loaded_inputs.keys()
    for key, value in inputs.items():
        assert torch.equal(value, loaded_inputs[key]), key
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**loaded_inputs).logits)


def test_qwen3_vl_timestamps_come_from_the_clip(tiny_model_factory):
    _, processor = tiny_model_factory("qwen3_vl")
    clip = make_random_clip(num_frames=4, interval=1.0)  # frames at 0, 1, 2, 3 s
    prompt = processor.decode(prepare_inputs(processor, [clip], QUESTION)["input_ids"][0])
    assert "<0.5 seconds>" in prompt and "<2.5 seconds>" in prompt  # mean time of each 2-frame patch


def test_qwen2_5_vl_seconds_per_temporal_patch(tiny_model_factory):
    _, processor = tiny_model_factory("qwen2_5_vl")
    inputs = prepare_inputs(processor, [make_random_clip(interval=0.25)], QUESTION)  # 4 sampled fps
    assert torch.allclose(torch.as_tensor(inputs["second_per_grid_ts"], dtype=torch.float), torch.tensor([0.5]))


def test_video_metadata_maps_timestamps_to_source_frames():
    meta = video_metadata(make_random_clip(num_frames=4, fps=30.0, interval=0.5))
    assert meta.frames_indices == [0, 15, 30, 45]
    assert meta.total_num_frames == 60 and meta.fps == 30.0


def test_full_depth_qwen2_vl_builds():
    model, processor = build_tiny_model(
        "qwen2_vl", num_layers=28, hidden_size=512, num_heads=8, num_kv_heads=2, intermediate_size=1536
    )
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_key_value_heads) == (28, 512, 2)
    assert sum(text.rope_parameters["mrope_section"]) == 512 // 8 // 2
    inputs = prepare_inputs(processor, [make_random_clip(num_frames=2)], QUESTION)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_special_tokens_and_template(family):
    tokenizer = build_tokenizer(family=family, corpus=["extra words for the tiny corpus"])
    assert len(tokenizer) == 512
    for token in tokenizer.all_special_tokens:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "Hi" in prompt and prompt != tokenizer.apply_chat_template(messages, tokenize=False)


def test_random_clip_static_fraction():
    clip = make_random_clip(num_frames=4, size=64, static_fraction=0.5)
    assert clip.frames.shape == (4, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert (clip.frames[:, :32] == clip.frames[:1, :32]).all()
    assert not (clip.frames[:, 32:] == clip.frames[:1, 32:]).all()
    still = make_random_clip(static=True)
    assert (still.frames == still.frames[:1]).all()


def test_minicpm_slices_are_read_as_streams_of_the_same_unit(tiny_model_factory):
    from framefusion.adapters import adapter_for

    model, processor = tiny_model_factory("minicpmv4_6", video_slice_mode=True)
    clip = make_random_clip(num_frames=3, size=128)
    clip.frames = np.concatenate([clip.frames] * 3, axis=2)  # 128 x 384: larger than one 128 x 128 unit: sliced
    inputs = prepare_inputs(processor, [clip], QUESTION)
    adapter = adapter_for(model)
    layout = adapter.token_layout(model.model, inputs["input_ids"], adapter.video_inputs(dict(inputs)))
    video = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
    runs = torch.tensor_split(video, (torch.nonzero(video.diff() != 1).flatten() + 1).tolist())  # one per unit
    units_per_frame = len(runs) // 3
    assert units_per_frame >= 2 and len(layout.grids) == units_per_frame  # the thumbnails, then each slice
    for stream, grid in enumerate(layout.grids):
        assert grid.frames == 3
        mine = layout.positions[layout.video == stream]
        for frame in range(3):
            unit = runs[frame * units_per_frame + stream]  # this frame's thumbnail or its stream-th slice
            assert torch.equal(mine[layout.frame[layout.video == stream] == frame], unit)
        assert grid.rows * grid.cols == runs[stream].numel()
    run_model(model, inputs)
