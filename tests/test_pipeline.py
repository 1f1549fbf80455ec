"""The library under the CLI: load_model, ask, compare and the measuring helpers, on a tiny local checkpoint."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from cli_helpers import AGREEMENT_KEYS, ASK_KEYS, TIMING_KEYS, dataset_file, tiny_checkpoint, video_file  # noqa: F401
from conftest import make_random_clip

from framefusion.adapters import UnsupportedModelError, adapter_for, supported_families
from framefusion.api import last_stats
from framefusion.pipeline import ask
from framefusion.pipeline.compare import agreement, compare, first_token_kl, score_methods, with_reference
from framefusion.pipeline.loading import LoadedModel, ModelLoadError, load_model, resolve_device, resolve_dtype
from framefusion.pipeline.measure import cache_bytes, time_vision_encoder, track_peak_memory

QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint) -> LoadedModel:  # noqa: F811
    return load_model(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def clip():
    return make_random_clip(8, size=64, static_fraction=0.5)


# ---------------------------------------------------------------- load_model


def test_load_model_local_directory(loaded, tiny_checkpoint):  # noqa: F811
    assert loaded.name == str(tiny_checkpoint)
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert not loaded.is_demo and loaded.family == "Qwen2-VL"
    assert not loaded.model.training


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_auto_device_and_dtype_on_gpu_and_apple_machines(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16  # a dtype every MPS build runs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_the_demo_model_runs_on_the_cpu_wherever_auto_would_pick_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loaded = load_model("demo", device="auto")
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32 and loaded.is_demo


def test_unknown_hub_id_offline_says_how_to_fetch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"hf download nobody-here/no-such-model.*local model directory"):
        load_model("nobody-here/no-such-model")


def test_unreachable_hub_fails_fast(monkeypatch):
    import socket

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelLoadError, match="cannot be reached.*hf download nobody-here/no-such-model"):
        load_model("nobody-here/no-such-model")


def test_unsupported_architecture_lists_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UnsupportedModelError) as error:
        load_model(str(tmp_path))
    assert "'llama'" in str(error.value) and all(family in str(error.value) for family in supported_families())


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="got a file"):
        load_model(str(tmp_path / "weights.bin"))


def test_demo_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "framefusion.demo", None)  # import fails as in an install without it
    with pytest.raises(ModelLoadError, match="demo model is not available"):
        load_model("demo")


# ---------------------------------------------------------------- ask


def test_ask_framefusion_result(loaded, clip):
    pieces: list[str] = []
    result = ask(loaded, clip, QUESTION, method="framefusion", budget=0.3, max_new_tokens=4, on_text=pieces.append)
    assert set(result.to_json()) == ASK_KEYS and set(result.to_json()["timings"]) == TIMING_KEYS
    assert "".join(pieces).strip() == result.answer
    assert result.frames == 8 and result.vision_tokens == 64
    assert result.kept_ratio == pytest.approx(result.stats.kept_ratio) and result.kept_ratio < 0.5
    num_layers = len(adapter_for(loaded.model).decoder_layers(loaded.model))
    assert len(result.tokens_per_layer) == num_layers
    assert all(value >= 0 for value in result.to_json()["timings"].values())
    assert result.timings.total_s >= result.timings.vision_s + result.timings.prefill_s
    assert result.timings.vision_s > 0 and result.peak_memory_bytes > 0
    assert result.first_token_logits.shape == (len(loaded.processor.tokenizer),)
    assert last_stats(loaded.model) is None  # the method was removed after the call
    assert "get_video_features" not in vars(adapter_for(loaded.model).multimodal_module(loaded.model))


def test_ask_dense_is_the_full_prompt(loaded, clip):
    result = ask(loaded, clip, QUESTION, method="dense", max_new_tokens=2)
    assert result.kept_ratio == 1.0 and result.stats is None and result.vision_tokens == 64
    assert len(set(result.tokens_per_layer)) == 1 and result.tokens_per_layer[0] > result.vision_tokens


# ---------------------------------------------------------------- compare


def test_first_token_kl():
    same = torch.tensor([1.0, 2.0, 3.0])
    assert first_token_kl(same, same) == pytest.approx(0.0, abs=1e-12)
    p, q = torch.tensor([0.0, 0.0]), torch.log(torch.tensor([0.9, 0.1]))
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.9)) + 0.5 * torch.log(torch.tensor(0.5 / 0.1))
    assert first_token_kl(p, q) == pytest.approx(float(expected), rel=1e-6)


def test_with_reference_adds_dense_first():
    assert with_reference(["framefusion"]) == ["dense", "framefusion"]
    assert with_reference(["framefusion", "dense", "framefusion"]) == ["framefusion", "dense"]
    with pytest.raises(ValueError, match="unknown method"):
        with_reference(["nope"])


def test_compare_agreement(loaded, clip):
    result = compare(loaded, clip, QUESTION, ["framefusion"], max_new_tokens=2, warmup=False)
    assert [r.method for r in result.results] == ["dense", "framefusion"]
    payload = result.to_json()
    assert set(payload) == {"results", "agreement", "video_s"} and set(payload["agreement"]) == {"dense", "framefusion"}
    assert all(set(a) == AGREEMENT_KEYS for a in payload["agreement"].values())
    dense = result.agreement["dense"]
    assert dense.first_token_match and dense.exact_match and dense.kl_divergence == 0.0
    again = agreement(result.results[1], result.results[1])
    assert again.kl_divergence == 0.0 and again.exact_match
    # FrameFusion against dense, computed here from the two first-token distributions and answers
    reference, reduced = result.results[0].first_token_logits, result.results[1].first_token_logits
    p = torch.softmax(reference.double(), dim=-1)
    kl = float((p * (p.log() - torch.log_softmax(reduced.double(), dim=-1))).sum())
    framefusion_agreement = result.agreement["framefusion"]
    assert kl > 0  # a third of the video tokens: the distribution moves
    assert framefusion_agreement.kl_divergence == pytest.approx(kl, rel=1e-9, abs=1e-12)
    assert framefusion_agreement.first_token_match == (int(reference.argmax()) == int(reduced.argmax()))
    assert framefusion_agreement.exact_match == (result.results[0].answer.strip().lower() ==
                                                 result.results[1].answer.strip().lower())


def test_score_methods_on_a_dataset(loaded, dataset_file):  # noqa: F811
    from framefusion.pipeline.evaluation import load_dataset

    seen = []
    scores = score_methods(loaded, load_dataset(dataset_file), ["dense", "framefusion"], num_frames=8,
                           max_new_tokens=2, on_item=lambda method, item: seen.append(method))
    assert [s.method for s in scores] == ["dense", "framefusion"] and all(s.total == 2 for s in scores)
    assert seen == ["dense", "dense", "framefusion", "framefusion"]


# ---------------------------------------------------------------- measuring helpers


def test_time_vision_encoder_restores_the_model(loaded):
    module = adapter_for(loaded.model).multimodal_module(loaded.model)
    before = set(vars(module))
    with time_vision_encoder(loaded.model, "cpu") as timer:
        assert "get_video_features" in vars(module)
    assert set(vars(module)) == before and timer.seconds == 0.0


def test_peak_memory_on_cpu_sees_an_allocation():
    import psutil

    with track_peak_memory("cpu") as baseline:
        pass
    before = psutil.Process().memory_info().rss
    with track_peak_memory("cpu") as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, fresh pages (glibc maps an allocation this large on its own)
        block += 1
    assert peak.kind == "rss" and peak.bytes >= baseline.bytes
    assert peak.bytes >= before + 60 * 2**20, (peak.bytes, before)  # the block was seen
    del block


def test_cache_bytes_counts_keys_and_values():
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), layer_idx=0)
    assert cache_bytes(cache) == 2 * 2 * 5 * 8 * 4
    assert cache_bytes(((torch.zeros(3), torch.zeros(3)),)) == 24
