"""MiniCPM-V 2.6 (openbmb/MiniCPM-V-2_6, the paper's MiniCPM-V-8B) in its original remote-code format.

config.json has architectures ["MiniCPMV"], model_type "minicpmv" and version 2.6; the weights are vpm.* (a NaViT
SigLIP-400M), resampler.* (64 queries per slice) and llm.* (Qwen2-7B). The remote code does not run on
transformers 5.x (it never calls post_init, and its non-persistent buffers come back uninitialised), so the model is
rebuilt here from transformers' own modules and reads the weights under their original names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from framefusion.models.minicpmv.config import MODEL_TYPE, MiniCPMV26Config, is_minicpmv_2_6, parse_config
from framefusion.models.minicpmv.modeling import MiniCPMV26ForConditionalGeneration
from framefusion.models.minicpmv.processor import MiniCPMV26Processor, read_settings
from framefusion.models.minicpmv.tokenizer import load_tokenizer
from framefusion.models.minicpmv.weights import load_original_weights

__all__ = ["MODEL_ARGS", "MODEL_TYPE", "MiniCPMV26Config", "MiniCPMV26ForConditionalGeneration", "MiniCPMV26Processor",
           "build_model", "is_minicpmv_2_6", "load", "parse_config", "random_model", "read_settings"]

MODEL_ARGS = {
    "video_max_slice_nums": "slices of a video frame besides its thumbnail (model card: 2; 1 keeps frames whole)",
    "max_slice_nums": "slices of an image in a prompt without video (preprocessor_config.json, 9 as published)",
    "use_image_id": "number images <image_id>k</image_id> in a prompt without video (true as published)",
}
TERMINATORS = ("<|im_end|>", "<|endoftext|>")  # the original chat() stops at either


def _bool(value: str) -> bool:
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _prompt_overrides(model_args: dict[str, str]) -> dict[str, Any]:
    """--model-arg values as PromptSettings fields; ValueError naming a bad value."""
    out: dict[str, Any] = {}
    for key, value in model_args.items():
        try:
            if key == "video_max_slice_nums":
                out["video_max_slices"] = int(value)
            elif key == "max_slice_nums":
                out["max_slice_nums"] = int(value)
            elif key == "use_image_id":
                out["use_image_id"] = _bool(value)
        except ValueError as error:
            raise ValueError(f"--model-arg {key}={value}: {error}") from None
    for key in ("video_max_slices", "max_slice_nums"):
        if key in out and out[key] < 1:
            raise ValueError(f"--model-arg {key}: at least 1, got {out[key]}")
    return out


def build_model(config: MiniCPMV26Config, *, dtype: torch.dtype, attn_implementation: str = "sdpa",
                device: str | torch.device = "meta") -> MiniCPMV26ForConditionalGeneration:
    """The model from its config: on the meta device (to assign checkpoint weights) or with random weights."""
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = attn_implementation
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MiniCPMV26ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def rebuild_rotary(model: MiniCPMV26ForConditionalGeneration, device: torch.device | str = "cpu") -> None:
    """The decoder's rotary table (a buffer no checkpoint holds), computed on `device`."""
    language = model.model.language_model
    with torch.device(device):
        language.rotary_emb = type(language.rotary_emb)(language.config)


def finish(model: MiniCPMV26ForConditionalGeneration, tokenizer: Any) -> MiniCPMV26ForConditionalGeneration:
    """Generation settings of the original chat(): stop at <|im_end|> or <|endoftext|>; plain greedy by default."""
    stops = [tokenizer.convert_tokens_to_ids(token) for token in TERMINATORS]
    model.generation_config.eos_token_id = [i for i in stops if i is not None]
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[-1]
    model.generation_config.bos_token_id = None
    leftover = [name for name, _ in model.named_parameters() if _.is_meta] + \
               [name for name, _ in model.named_buffers() if _.is_meta]
    if leftover:
        raise ValueError(f"MiniCPM-V 2.6: {', '.join(leftover[:8])} were not loaded")
    return model.eval()


def load(folder: Path, *, dtype: torch.dtype, attn_implementation: str = "sdpa",
         model_args: dict[str, str] | None = None) -> tuple[MiniCPMV26ForConditionalGeneration, MiniCPMV26Processor]:
    """(model, processor) of a MiniCPM-V 2.6 checkpoint folder in the original format."""
    folder = Path(folder)
    config = parse_config(json.loads((folder / "config.json").read_text()))
    settings = read_settings(folder, config.query_num, _prompt_overrides(dict(model_args or {})))
    tokenizer = load_tokenizer(folder, [token for _, token in settings.markers])
    config.image_token_id = tokenizer.convert_tokens_to_ids(settings.marker("unk"))
    model = build_model(config, dtype=dtype, attn_implementation=attn_implementation)
    load_original_weights(model, folder, dtype)
    rebuild_rotary(model)
    return finish(model, tokenizer), MiniCPMV26Processor(tokenizer, settings)


def random_config(folder: Path, tokenizer: Any) -> MiniCPMV26Config:
    """The native config of a folder's original config.json (for --random-weights)."""
    return parse_config(json.loads((Path(folder) / "config.json").read_text()))


def empty_model(config: MiniCPMV26Config) -> MiniCPMV26ForConditionalGeneration:
    """The model of a native config on the meta device (to count parameters)."""
    return build_model(config, dtype=torch.float32, device="meta")


def random_model(folder: Path, config: MiniCPMV26Config, tokenizer: Any, *, dtype: torch.dtype = torch.float32,
                 attn_implementation: str = "sdpa", seed: int = 0) -> tuple[Any, MiniCPMV26Processor]:
    """A model of `config` (e.g. a published shape scaled down) with random weights, and its processor reading the
    slicing settings of `folder` with `tokenizer` (--random-weights)."""
    settings = read_settings(folder, config.query_num)
    config.image_token_id = tokenizer.convert_tokens_to_ids(settings.marker("unk"))
    torch.manual_seed(seed)
    model = build_model(config, dtype=dtype, attn_implementation=attn_implementation, device="cpu")
    return finish(model, tokenizer), MiniCPMV26Processor(tokenizer, settings)
