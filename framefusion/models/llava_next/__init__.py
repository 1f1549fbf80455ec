"""LLaVA-NeXT's LlavaQwen checkpoints (LLaVA-Video-7B/72B-Qwen2, LLaVA-Video-7B-Qwen2-Video-Only,
llava-onevision-qwen2-0.5b/7b/72b-ov and -si) in their original format, built natively from transformers' SigLIP and
Qwen2 modules with the weights read under their original names.

`load` is what framefusion.models' registry calls; `save_original` writes a model back in the original layout
(config.json with the original keys, safetensors under the original names); `MODEL_ARGS` lists the keys
`--model-arg KEY=VALUE` may override.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from framefusion.models.llava_next.configuration import LlavaQwenVideoConfig, build_config
from framefusion.models.llava_next.modeling import LlavaQwenForVideo, nested_tower, tower_body
from framefusion.models.llava_next.processor import LlavaQwenProcessor
from framefusion.models.llava_next.settings import MODEL_ARGS, settings_from_config
from framefusion.models.llava_next.vision_tower import TOWER_PREFIX, tower_config
from framefusion.models.llava_next.weights import CheckpointWeights, save_weights, to_ours

__all__ = ["MODEL_ARGS", "LlavaQwenForVideo", "LlavaQwenProcessor", "LlavaQwenVideoConfig", "load", "make_processor",
           "empty_model", "native_config", "random_config", "random_model", "save_original", "tower_body"]


def load(folder: Path, *, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
         model_args: dict[str, str] | None = None) -> tuple[LlavaQwenForVideo, LlavaQwenProcessor]:
    """(model in eval mode on the CPU, processor) of a LlavaQwen checkpoint folder; model_args override config keys."""
    folder = Path(folder)
    original = json.loads((folder / "config.json").read_text())
    weights = CheckpointWeights(folder)
    tokenizer = load_tokenizer(folder)
    config = native_config(original, tokenizer_size=len(tokenizer), model_args=model_args, weights=weights)
    model = build_model(config, weights, dtype, attn_implementation)
    _generation_config(model, folder, tokenizer)
    return model, make_processor(tokenizer, config)


def random_config(folder: Path, tokenizer: Any) -> LlavaQwenVideoConfig:
    """The native config of a folder's original config.json for a random-weight model with `tokenizer`."""
    return native_config(json.loads((Path(folder) / "config.json").read_text()), tokenizer_size=len(tokenizer))


def random_model(folder: Path, config: LlavaQwenVideoConfig, tokenizer: Any, *, dtype: torch.dtype = torch.float32,
                 attn_implementation: str = "sdpa", seed: int = 0) -> tuple[LlavaQwenForVideo, LlavaQwenProcessor]:
    """(model with random weights, processor) of a native config, with `tokenizer`'s end and pad ids."""
    torch.manual_seed(seed)
    model = LlavaQwenForVideo._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), make_processor(tokenizer, config)


def empty_model(config: LlavaQwenVideoConfig) -> LlavaQwenForVideo:
    """The model of a native config (call it under torch.device("meta") to count parameters)."""
    return LlavaQwenForVideo._from_config(config)


def native_config(original: dict[str, Any], *, tokenizer_size: int, model_args: dict[str, str] | None = None,
                  weights: CheckpointWeights | None = None) -> LlavaQwenVideoConfig:
    """The native model's config from an original config.json (and the checkpoint's weights, which fix the tower's
    sizes when its configuration is not cached; None: a random-weight build, so400m's published sizes)."""
    settings = settings_from_config(original, model_args)
    vision, source = tower_config(settings.mm_vision_tower, weights, settings.mm_vision_select_layer)
    video_id, image_id = placeholder_ids(tokenizer_size, int(original["vocab_size"]))
    return build_config(original, settings, vision, source, video_id, image_id)


def make_processor(tokenizer: Any, config: LlavaQwenVideoConfig) -> LlavaQwenProcessor:
    """The processor of a native model's config with this tokenizer."""
    vision = config.vision_config
    return LlavaQwenProcessor(tokenizer, config.settings, vision.image_size, vision.patch_size, config.video_token_id,
                              config.image_token_id)


def load_tokenizer(folder: Path) -> Any:
    """The checkpoint's tokenizer by the class its tokenizer_config.json names (Qwen2Tokenizer for these): AutoTokenizer
    would go by config.json's model_type "llava", which is not what these checkpoints hold."""
    import transformers

    settings_file = folder / "tokenizer_config.json"
    name = json.loads(settings_file.read_text()).get("tokenizer_class") if settings_file.is_file() else None
    name = name or "Qwen2Tokenizer"
    tokenizer_class = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if tokenizer_class is None:
        raise ValueError(f"tokenizer_class {name!r} of {settings_file} is not a transformers tokenizer")
    return tokenizer_class.from_pretrained(str(folder))


def placeholder_ids(tokenizer_size: int, vocab_size: int) -> tuple[int, int]:
    """(video, image) placeholder ids: the first two embedding rows no token uses (151646 and 151647 for the Qwen2
    tokenizer, the ids the -hf conversions gave <image> and <video>); they are replaced by features before the LLM."""
    if tokenizer_size + 2 > vocab_size:
        raise ValueError(f"the embedding has {vocab_size} rows and the tokenizer {tokenizer_size} tokens: no free rows "
                         "for the video and image placeholders")
    return tokenizer_size, tokenizer_size + 1


def build_model(config: LlavaQwenVideoConfig, weights: CheckpointWeights, dtype: torch.dtype,
                attn_implementation: str) -> LlavaQwenForVideo:
    """The model with the checkpoint's weights (built on the meta device, then the tensors put in place)."""
    with torch.device("meta"):
        model = LlavaQwenForVideo._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    vision_layers = config.vision_config.num_hidden_layers
    nested = nested_tower(model)
    state, unexpected = {}, []
    for name, tensor in weights.tensors():
        ours = to_ours(name, nested)
        if ours is None or _unused_tower_weight(name, vision_layers):
            if ours is None:
                unexpected.append(name)
            continue
        state[ours] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    if unexpected:
        raise ValueError(f"the checkpoint has {len(unexpected)} tensors this format does not know, e.g. "
                         f"{', '.join(unexpected[:3])}")
    missing = set(model.state_dict()) - set(state)
    if "lm_head.weight" in missing and config.text_config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
        missing.discard("lm_head.weight")
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weights, e.g. {', '.join(sorted(missing)[:3])}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.text_config.tie_word_embeddings and "lm_head.weight" not in weights.names():
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    _materialise_buffers(model)
    return model.eval()


def _unused_tower_weight(name: str, layers: int) -> bool:
    """Tower weights past the layers the features use, or of the pooling head (LLaVA-NeXT drops both)."""
    if not name.startswith(TOWER_PREFIX):
        return False
    rest = name[len(TOWER_PREFIX):]
    if rest.startswith("head."):
        return True
    if rest.startswith("encoder.layers."):
        return int(rest.split(".")[2]) >= layers
    return False


def _materialise_buffers(model: LlavaQwenForVideo) -> None:
    """Recompute the non-persistent buffers the meta-device build left empty (rotary frequencies, SigLIP positions)."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    language = model.model.language_model
    language.rotary_emb = Qwen2RotaryEmbedding(config=language.config)
    embeddings = tower_body(model.model.vision_tower).embeddings
    embeddings.position_ids = torch.arange(embeddings.num_positions).expand((1, -1))
    empty = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if empty:
        raise RuntimeError(f"tensors left uninitialised after loading: {', '.join(empty[:5])}")


def _generation_config(model: LlavaQwenForVideo, folder: Path, tokenizer: Any) -> None:
    """generation_config.json when the checkpoint has one; the tokenizer's pad and end tokens where it says none."""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    config = model.generation_config
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json",
                   "tokenizer.json", "generation_config.json")


def save_original(model: LlavaQwenForVideo, folder: str | Path, tokenizer_folder: str | Path | None = None,
                  max_shard_bytes: int | None = None) -> Path:
    """Write the model in the original LlavaQwen layout: config.json as read, safetensors under the original names
    (sharded past `max_shard_bytes`); the tokenizer files are copied from `tokenizer_folder` when given."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.original_config, indent=2) + "\n")
    state = dict(model.state_dict())
    if model.config.text_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_weights(state, folder, nested_tower(model), max_shard_bytes)
    for name in TOKENIZER_FILES if tokenizer_folder is not None else ():
        if (Path(tokenizer_folder) / name).is_file():
            shutil.copyfile(Path(tokenizer_folder) / name, folder / name)
    return folder
