"""InternVL2 / 2.5 in the published remote-code format (InternVLChatModel, config model_type "internvl_chat"),
natively on transformers' modules: InternViT as InternVLVisionModel, InternLM2 as LlamaModel (Qwen2 as Qwen2Model),
the weights read under their original names, the tokenizer and the chat / tiling / video pipeline as published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from framefusion.models.internvl_chat.config import CHAT_KEYS, InternVLChatConfig, build_config
from framefusion.models.internvl_chat.conversation import get_template
from framefusion.models.internvl_chat.modeling import InternVLChatForConditionalGeneration, InternVLChatModel
from framefusion.models.internvl_chat.processor import IMG_CONTEXT, InternVLChatProcessor
from framefusion.models.internvl_chat.tokenizer import load_tokenizer
from framefusion.models.internvl_chat.weights import WeightError, iter_tensors, to_native, to_original

__all__ = ["InternVLChatConfig", "InternVLChatForConditionalGeneration", "InternVLChatModel", "InternVLChatProcessor",
           "MODEL_ARGS", "build_model", "config_from_folder", "empty_model", "load", "load_weights",
           "make_processor", "random_config", "random_model", "to_original"]

MODEL_ARGS = {
    "template": "conversation template name (internvl2_5, internlm2-chat, Hermes-2)",
    "system_message": "system message of the conversation template",
    "max_dynamic_patch": "most tiles per image (images only; a video frame is always one tile)",
    "min_dynamic_patch": "fewest tiles per image",
    "use_thumbnail": "add a whole-image thumbnail tile to a tiled image (true/false)",
    "dynamic_image_size": "tile images at all (true/false)",
}


def _parse(key: str, value: str) -> Any:
    """A --model-arg value in the type of the config key."""
    default = CHAT_KEYS[key]
    if key in ("max_dynamic_patch", "min_dynamic_patch"):
        return int(value)
    if key in ("use_thumbnail", "dynamic_image_size"):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--model-arg {key} expects true or false, got {value!r}")
        return value.lower() in ("true", "1")
    return value if default is None or isinstance(default, str) else type(default)(value)


def read_config(folder: Path, model_args: dict[str, str] | None = None, tokenizer: Any = None) -> InternVLChatConfig:
    """The native config of a checkpoint folder (`tokenizer` gives the `<IMG_CONTEXT>` id)."""
    raw = json.loads((folder / "config.json").read_text())
    image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"{folder}: the tokenizer has no {IMG_CONTEXT} token")
    overrides = {key: _parse(key, value) for key, value in (model_args or {}).items()}
    config = build_config(raw, image_token_id, overrides)
    get_template(config.template)  # a ValueError now for an unknown template
    return config


def config_from_folder(folder: Path, image_token_id: int = 0) -> InternVLChatConfig:
    """The native config of a folder's config.json alone (no tokenizer: the placeholder id is given)."""
    return build_config(json.loads((Path(folder) / "config.json").read_text()), image_token_id)


def random_config(folder: Path, tokenizer: Any) -> InternVLChatConfig:
    """The native config of a folder's original config.json for a random-weight model with `tokenizer`."""
    return build_config(json.loads((Path(folder) / "config.json").read_text()),
                        tokenizer.convert_tokens_to_ids(IMG_CONTEXT))


def empty_model(config: InternVLChatConfig) -> InternVLChatForConditionalGeneration:
    """The model of a native config (call it under torch.device("meta") to count parameters)."""
    return build_model(config, device="meta")


def random_model(folder: Path | None, config: InternVLChatConfig, tokenizer: Any, *, dtype: torch.dtype = torch.float32,
                 attn_implementation: str = "sdpa", seed: int = 0
                 ) -> tuple[InternVLChatForConditionalGeneration, InternVLChatProcessor]:
    """(model with random weights, processor) of a config, with `tokenizer`'s placeholder and stop ids."""
    config.image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    torch.manual_seed(seed)
    model = build_model(config, attn_implementation, dtype)
    processor = make_processor(config, tokenizer)
    _set_generation_ids(model, tokenizer, processor)
    return model.eval(), processor


def build_model(config: InternVLChatConfig, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> InternVLChatForConditionalGeneration:
    """The model with freshly initialised weights (on `device`; "meta" builds it without memory)."""
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = "eager" if attn_implementation == "eager" else "sdpa"
    with torch.device(device):
        model = InternVLChatForConditionalGeneration(config)
    return model.to(dtype) if str(device) != "meta" else model


def load_weights(model: InternVLChatForConditionalGeneration, folder: Path, dtype: torch.dtype) -> None:
    """Read the checkpoint's tensors under their original names into a model built on the meta device."""
    config = model.config
    expected = dict(model.state_dict())
    loaded: set[str] = set()
    for name, tensor in iter_tensors(folder):
        for native, value in to_native(name, tensor, config).items():
            if native not in expected:
                raise WeightError(f"{folder}: tensor {name!r} ({native}) has no place in the model")
            if tuple(value.shape) != tuple(expected[native].shape):
                raise WeightError(f"{folder}: tensor {name!r} has shape {tuple(value.shape)}, the config expects "
                                  f"{tuple(expected[native].shape)}")
            _assign(model, native, value.to(dtype))
            loaded.add(native)
    missing = sorted(set(expected) - loaded)
    if missing:
        raise WeightError(f"{folder}: {len(missing)} tensors missing from the checkpoint, e.g. {missing[:3]}")
    _rebuild_buffers(model)


def _assign(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Put a loaded tensor in place of the parameter (or buffer) `name`."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def _rebuild_buffers(model: InternVLChatForConditionalGeneration) -> None:
    """Non-persistent buffers (the LLM's rotary frequencies) are not in checkpoints: compute them anew."""
    language = model.model.language_model
    rotary = language.rotary_emb
    language.rotary_emb = type(rotary)(config=language.config)
    left = [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if left:
        raise RuntimeError(f"buffers left uninitialised after loading: {left[:3]}")


def make_processor(config: InternVLChatConfig, tokenizer: Any) -> InternVLChatProcessor:
    """The checkpoint's processor: its template, tile size, tiling settings and tokenizer."""
    system = config.system_message if isinstance(config.system_message, str) else None
    return InternVLChatProcessor(
        tokenizer, get_template(config.template), image_size=int(config.force_image_size or
                                                                 config.vision_config.image_size[0]),
        tokens_per_tile=int(config.image_seq_length), system_message=system,
        dynamic_image_size=bool(config.dynamic_image_size), min_dynamic_patch=int(config.min_dynamic_patch),
        max_dynamic_patch=int(config.max_dynamic_patch), use_thumbnail=bool(config.use_thumbnail))


def load(folder: Path, *, dtype: torch.dtype, attn_implementation: str = "sdpa",
         model_args: dict[str, str] | None = None
         ) -> tuple[InternVLChatForConditionalGeneration, InternVLChatProcessor]:
    """(model, processor) of an InternVL2 / 2.5 checkpoint folder in the remote-code format."""
    folder = Path(folder)
    tokenizer = load_tokenizer(folder)
    config = read_config(folder, model_args, tokenizer)
    model = build_model(config, attn_implementation, dtype, device="meta")
    load_weights(model, folder, dtype)
    processor = make_processor(config, tokenizer)
    _set_generation_ids(model, tokenizer, processor)
    return model.eval(), processor


def _set_generation_ids(model: InternVLChatForConditionalGeneration, tokenizer: Any,
                        processor: InternVLChatProcessor) -> None:
    stop = tokenizer.convert_tokens_to_ids(processor.template.stop_token)
    model.generation_config.eos_token_id = stop  # the chat code stops at the template's separator
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    model.generation_config.bos_token_id = tokenizer.bos_token_id
