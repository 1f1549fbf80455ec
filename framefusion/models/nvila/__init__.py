"""NVILA (Efficient-Large-Model/NVILA-*) in VILA's published layout, built natively from transformers' modules.

`load(folder, ...)` reads config.json and the sub-folders llm/ (Qwen2 + tokenizer + chat template), vision_tower/
(SigLIP + its image-processor config) and mm_projector/ under their published names; no VILA code is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    SiglipVisionModel,
)

from framefusion.models.nvila.config import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    NVILAConfig,
    NVILAConfigError,
    read_config,
    read_json,
)
from framefusion.models.nvila.modeling import NVILAForConditionalGeneration
from framefusion.models.nvila.processing import (
    NVILAProcessor,
    add_vila_tokens,
    stop_token_ids,
)
from framefusion.models.nvila.projector import NVILAProjector
from framefusion.models.nvila.weights import load_into

__all__ = ["MODEL_ARGS", "NVILAConfig", "NVILAConfigError", "NVILAForConditionalGeneration", "NVILAProcessor", "load",
           "random_model", "read_config"]

MODEL_ARGS = {
    "image_aspect_ratio": "image preprocessing: resize, pad, dynamic (tiles + thumbnail) or dynamic_s2 (multi-scale "
                          "tiles; dynamic-S2 models only)",
    "max_tiles": "most tiles per image for dynamic / dynamic_s2 (VILA's default 12)",
    "min_tiles": "fewest tiles per image for dynamic (VILA's default 1)",
}
_INT_ARGS = ("max_tiles", "min_tiles")


def _overrides(model_args: dict[str, str]) -> dict[str, Any]:
    """--model-arg values as config.json values."""
    overrides: dict[str, Any] = {}
    for key, value in model_args.items():
        if key in _INT_ARGS:
            try:
                overrides[key] = int(value)
            except ValueError:
                raise ValueError(f"--model-arg {key} expects an integer, got {value!r}") from None
        elif key == "image_aspect_ratio":
            if value not in ("resize", "pad", "dynamic", "dynamic_s2"):
                raise ValueError(f"--model-arg image_aspect_ratio: choose resize, pad, dynamic or dynamic_s2; got {value!r}")
            overrides[key] = value
    return overrides


def finish_config(config: NVILAConfig, tokenizer: Any) -> None:
    """Token ids the model needs from the tokenizer: the media placeholders and the encoders' start/end/sep text."""
    config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    texts = {t for encoder in (config.image_encoder, config.video_encoder)
             for t in (encoder.start_tokens, encoder.end_tokens, encoder.sep_tokens) if t is not None}
    config.encoder_token_ids = {text: list(tokenizer(text).input_ids) for text in sorted(texts)}


def generation_config(config: NVILAConfig, tokenizer: Any, chat_template: str) -> GenerationConfig:
    """Greedy generation that stops at EOS or the chat template's end-of-turn token, as VILA's default config."""
    stops = stop_token_ids(tokenizer, chat_template)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return GenerationConfig(eos_token_id=stops, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id or stops[0],
                            do_sample=False)


def _check_loaded(model: torch.nn.Module) -> None:
    """No tensor left on the meta device (every part was read from the checkpoint)."""
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(f"NVILA weights missing after loading: {left[:5]}")


def fit_vocabulary(model: NVILAForConditionalGeneration, size: int) -> None:
    """Cut the LLM's embedding and head rows to the tokenizer's size, as VILA's loader resizes them (the rows past
    the tokenizer, Qwen's padding, are dropped). A tokenizer larger than the embeddings is an error."""
    embed = model.model.get_input_embeddings()
    rows = embed.weight.shape[0]
    if size > rows:
        raise ValueError(f"the tokenizer has {size} tokens but the LLM only {rows} embedding rows")
    if size == rows:
        return
    tied = model.lm_head.weight is embed.weight
    embed.weight = torch.nn.Parameter(embed.weight.data[:size].clone())
    embed.num_embeddings = size
    if tied:
        model.lm_head.weight = embed.weight
    else:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.data[:size].clone())
    model.lm_head.out_features = size
    model.config.text_config.vocab_size = size


def load(folder: Path, *, dtype: torch.dtype, attn_implementation: str = "sdpa",
         model_args: dict[str, str] | None = None) -> tuple[NVILAForConditionalGeneration, NVILAProcessor]:
    """(model, processor) of an NVILA checkpoint folder in the published layout."""
    folder = Path(folder)
    config = read_config(folder, _overrides(model_args or {}))
    tokenizer = add_vila_tokens(AutoTokenizer.from_pretrained(folder / "llm"))
    finish_config(config, tokenizer)
    llm = AutoModelForCausalLM.from_pretrained(folder / "llm", dtype=dtype, attn_implementation=attn_implementation)
    tower = SiglipVisionModel.from_pretrained(folder / "vision_tower", dtype=dtype,
                                              attn_implementation=attn_implementation)
    config.text_config, config.vision_config = llm.config, tower.config
    config.vision_config.temporal_patch_size = config.video_encoder.temporal_pool
    projector = NVILAProjector(config.projector_type, config.mm_hidden_size, llm.config.hidden_size)
    load_into(projector, folder / "mm_projector", "projector")
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = NVILAForConditionalGeneration(config)
    model.model.language_model = llm.model
    model.model.vision_tower = tower
    model.model.mm_projector = projector.to(dtype)
    model.lm_head = llm.lm_head
    _check_loaded(model)
    fit_vocabulary(model, len(tokenizer))
    processor = NVILAProcessor(config, tokenizer, model.model.tokens_per_side)
    model.generation_config = generation_config(config, tokenizer, processor.chat_template)
    return model.eval(), processor


def random_config(folder: Path, tokenizer: Any) -> NVILAConfig:
    """The NVILAConfig of a folder in the published layout (for --random-weights; random_model takes the token ids
    from the tokenizer)."""
    return read_config(folder)


def empty_model(config: NVILAConfig) -> NVILAForConditionalGeneration:
    """The model of a config (call it under torch.device("meta") to count parameters)."""
    return NVILAForConditionalGeneration(config)


def random_model(folder: Path | None, config: NVILAConfig, tokenizer: Any, *, dtype: torch.dtype = torch.float32,
                 attn_implementation: str = "sdpa", seed: int = 0) -> tuple[NVILAForConditionalGeneration, NVILAProcessor]:
    """(model with random weights, processor) for an NVILAConfig (e.g. a published config at reduced width) and a
    tokenizer that has VILA's media tokens; the LLM's vocabulary is set to the tokenizer's size."""
    finish_config(config, tokenizer)
    config.text_config.vocab_size = len(tokenizer)
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = NVILAForConditionalGeneration(config).to(dtype)
    processor = NVILAProcessor(config, tokenizer, model.model.tokens_per_side)
    model.generation_config = generation_config(config, tokenizer, processor.chat_template)
    return model.eval(), processor


def preprocessor_settings(folder: Path) -> dict[str, Any]:
    """vision_tower/preprocessor_config.json of a checkpoint folder (empty when absent)."""
    path = Path(folder) / "vision_tower" / "preprocessor_config.json"
    return read_json(path) if path.is_file() else {}
