"""Real model shapes with random weights, offline (the convention of vLLM's `--load-format dummy`).

The config files of the supported reference checkpoints ship in `framefusion/pipeline/configs/<short name>/` (facts:
sizes, layer kinds, processor settings; no weights, no tokenizer). A model is built from such a config, from a
local model directory, or from a hub id whose config is in the local Hugging Face cache, with random weights.
Its processor uses the checkpoint's own image/video processor settings and the small tokenizer of
framefusion.tiny (special-token ids in the config are set to that tokenizer's). `width_scale` shrinks the widths
(hidden, FFN, attention and linear-attention head counts, the vision tower's width) and keeps the depth, the
head size and the grouped-query ratio, so a 7B-shaped model runs on a laptop CPU with the real layer count.
A config in an original format (framefusion.models, e.g. LLaVA-NeXT's LlavaQwen for `llava-video-7b`) builds that
format's native model and processor.
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from framefusion.models import FORMATS, find_format

CONFIGS = Path(__file__).with_name("configs")
REFERENCES = {  # short name: (hub id the config comes from, framefusion.tiny tokenizer family)
    "qwen2-vl-7b": ("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"),
    "qwen2.5-vl-7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    "qwen3-vl-8b": ("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl"),
    "llava-onevision-7b": ("llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava_onevision"),
    "llava-video-7b": ("lmms-lab/LLaVA-Video-7B-Qwen2", "qwen2_vl"),  # the original LLaVA-NeXT format: 210 per frame
    "llava-video-7b-hf": ("llava-hf/LLaVA-Video-7B-Qwen2-hf", "llava_onevision"),  # the -hf conversion's layout
    "internvl3-8b": ("OpenGVLab/InternVL3-8B-hf", "internvl"),
    "qwen3.5-0.8b": ("Qwen/Qwen3.5-0.8B", "qwen3_5"),
    "qwen3.5-9b": ("Qwen/Qwen3.5-9B", "qwen3_5"),
    "minicpm-v-4.6": ("openbmb/MiniCPM-V-4.6", "minicpmv4_6"),
    "internvl2.5-8b": ("OpenGVLab/InternVL2_5-8B", "internvl_chat"),  # the original remote-code format
    "minicpm-v-2.6": ("openbmb/MiniCPM-V-2_6", "minicpmv2_6"),  # the original remote-code format
    "nvila-8b-video": ("Efficient-Large-Model/NVILA-8B-Video", "nvila"),  # VILA's layout: llm/, vision_tower/, ...
    "nvila-lite-2b": ("Efficient-Large-Model/NVILA-Lite-2B", "nvila"),
}
TOKENIZER_FAMILY = {  # model_type -> tiny tokenizer family (for configs from a directory or the hub cache)
    "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "llava_onevision": "llava_onevision",
    "llava_next_video": "llava_next_video", "internvl": "internvl", "qwen3_5": "qwen3_5",
    "minicpmv4_6": "minicpmv4_6", "minicpmv4_7": "minicpmv4_7", "llava_llama": "nvila",
}
CPU_WIDTH_SCALE = 0.25  # the largest width scale chosen by default on a CPU (a 7B model: about 0.7 B parameters)
GPU_MEMORY_SHARE = 0.6  # weights may take this share of a GPU's free memory at the default width
TEXT_HEADS = ("num_attention_heads", "num_key_value_heads", "linear_num_key_heads", "linear_num_value_heads")
VISION_HEADS = ("num_heads", "num_attention_heads")


class RandomModelError(ValueError):
    """A random-weight model that cannot be built as asked, with a message saying what to do."""


def reference_names() -> list[str]:
    """The short names of the shipped reference configs."""
    return list(REFERENCES)


def config_source(name: str) -> tuple[Path, str]:
    """(folder holding config.json and the processor files, tokenizer family) for a short name, a directory or a
    hub id in the local cache."""
    if name in REFERENCES:
        return CONFIGS / name, REFERENCES[name][1]
    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = _cached_hub_folder(name)
    raw = json.loads((folder / "config.json").read_text())
    original = find_format(raw)
    if original is not None:
        return folder, original.tiny_tokenizer
    model_type = raw.get("model_type")
    if model_type not in TOKENIZER_FAMILY:
        raise RandomModelError(f"{name}: model_type {model_type!r} has no adapter; random weights work for "
                               f"{', '.join(sorted(TOKENIZER_FAMILY))}")
    return folder, TOKENIZER_FAMILY[model_type]


def _cached_hub_folder(name: str) -> Path:
    """The snapshot folder of a hub id's config.json in the local cache (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    if not isinstance(found, str):
        raise RandomModelError(f"no config for {name!r}: use a short name ({', '.join(REFERENCES)}), a model "
                               "directory, or a hub id whose config.json is in the local Hugging Face cache")
    return Path(found).parent


def _fields(sub: Any, keys: tuple[str, ...]) -> list[str]:
    """The integer fields of a sub-config among `keys`, each once (aliases such as num_attention_heads ->
    num_heads resolved through the config's attribute_map)."""
    aliases = getattr(sub, "attribute_map", {}) or {}
    fields = dict.fromkeys(aliases.get(key, key) for key in keys)
    return [key for key in fields if isinstance(getattr(sub, key, None), int)]


def valid_width_scales(config: Any) -> list[float]:
    """Width scales s in (0, 1] that keep every head count (text, linear attention, vision) an integer."""
    counts = [getattr(sub, key) for sub, keys in ((config.get_text_config(), TEXT_HEADS),
                                                   (config.vision_config, VISION_HEADS))
              for key in _fields(sub, keys)]
    step = Fraction(1, max(1, min(counts)))
    candidates = {Fraction(i, 64) for i in range(1, 65)} | {step * i for i in range(1, int(1 / step) + 1)}
    return sorted(float(s) for s in candidates if 0 < s <= 1 and all((s * c).denominator == 1 for c in counts))


def scaled_config(config: Any, width_scale: float) -> Any:
    """A copy of `config` with widths times `width_scale`: depth, head sizes and head ratios unchanged."""
    if width_scale not in valid_width_scales(config):
        raise RandomModelError(f"width scale {width_scale:g} would make a head count fractional; choose one of "
                               f"{', '.join(f'{s:g}' for s in valid_width_scales(config))}")
    config = copy.deepcopy(config)
    if width_scale == 1.0:
        return config
    text, vision = config.get_text_config(), config.vision_config
    text.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    for key in _fields(text, ("hidden_size", "intermediate_size", *TEXT_HEADS)):
        setattr(text, key, round(getattr(text, key) * width_scale))
    for key in _fields(vision, ("embed_dim", "intermediate_size", *VISION_HEADS)):
        setattr(vision, key, round(getattr(vision, key) * width_scale))
    if config.model_type == "qwen2_vl":  # its vision hidden_size is the merger's output: the LLM width
        vision.hidden_size = text.hidden_size
    elif isinstance(getattr(vision, "hidden_size", None), int):
        vision.hidden_size = round(vision.hidden_size * width_scale)
    if hasattr(vision, "out_hidden_size"):
        vision.out_hidden_size = text.hidden_size
    return config


def default_width_scale(config: Any, device: torch.device, dtype: torch.dtype) -> float:
    """Full size where the weights fit a GPU's free memory; on a CPU (or a small GPU) a reduced width."""
    scales = valid_width_scales(config)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        bytes_per = torch.finfo(dtype).bits // 8
        fitting = [s for s in scales if parameter_count(scaled_config(config, s)) * bytes_per <= GPU_MEMORY_SHARE * free]
        if fitting:
            return fitting[-1]
    small = [s for s in scales if s <= CPU_WIDTH_SCALE]
    return small[-1] if small else scales[0]


def read_reference_config(folder: Path) -> Any:
    """The config of a model folder: transformers' AutoConfig, or the format module's reader for a checkpoint in
    an original format (framefusion.models, e.g. NVILA's llm/ + vision_tower/ + mm_projector/ layout)."""
    from transformers import AutoConfig

    from framefusion.models import find_format

    fmt = find_format(json.loads((Path(folder) / "config.json").read_text()))
    return fmt.implementation().read_config(folder) if fmt is not None else AutoConfig.from_pretrained(folder)


def _original_module(config: Any) -> Any:
    """The framefusion.models format module of a config in an original (non-transformers) format, else None."""
    from framefusion.models import FORMATS

    fmt = next((f for f in FORMATS if getattr(config, "model_type", None) in f.model_types), None)
    return fmt.implementation() if fmt is not None else None


def parameter_count(config: Any) -> int:
    """Parameters of the model a config builds (counted on the meta device, nothing allocated)."""
    original = _original_of(config)
    with torch.device("meta"):
        if original is not None:
            model = original.implementation().empty_model(copy.deepcopy(config))
        else:
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _original_of(config: Any):
    """The original format whose native config this is (framefusion.models), or None."""
    return next((fmt for fmt in FORMATS if config.model_type in fmt.native_model_types), None)


def tiny_tokenizer(family: str, folder: Path | None = None) -> Any:
    """The small tokenizer (framefusion.tiny) a random-weight model of this tokenizer family gets; `folder` holds
    the config when the tokenizer depends on it (NVILA's time tokens)."""
    if family == "internvl_chat":
        from framefusion.tiny.internvl_chat import tiny_tokenizer as internvl_tokenizer

        return internvl_tokenizer()
    if family == "nvila":
        from framefusion.tiny.nvila import nvila_tokenizer

        top = json.loads((Path(folder) / "config.json").read_text()) if folder is not None else {}
        return nvila_tokenizer(int(top.get("num_time_tokens") or 0))
    from framefusion.tiny.tokenizer import build_tokenizer

    return build_tokenizer(family=family)


def reference_config(folder: Path, tokenizer: Any = None) -> Any:
    """The config a folder's config.json describes: transformers' own, or the native one of an original format
    (framefusion.models; its placeholder tokens follow `tokenizer`, the tiny one of its family by default)."""
    from transformers import AutoConfig

    raw = json.loads((Path(folder) / "config.json").read_text())
    original = find_format(raw)
    if original is None:
        return AutoConfig.from_pretrained(folder)
    module = original.implementation()
    if not hasattr(module, "random_config"):
        raise RandomModelError(f"random weights are not available for {original.name} checkpoints")
    return module.random_config(Path(folder), tokenizer if tokenizer is not None else
                                tiny_tokenizer(original.tiny_tokenizer, folder))


def build_random_model(name: str, *, device: torch.device, dtype: torch.dtype, attn: str,
                       width_scale: float | None = None, seed: int = 0) -> tuple[Any, Any, float]:
    """(model with random weights, processor, width scale used) for a short name, directory or cached hub id."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoVideoProcessor

    from framefusion.tiny.tokenizer import special_token_ids

    folder, family = config_source(name)
    tokenizer = tiny_tokenizer(family, folder)
    config = reference_config(folder, tokenizer)
    scale = default_width_scale(config, device, dtype) if width_scale is None else width_scale
    config = scaled_config(config, scale)
    original = find_format(json.loads((folder / "config.json").read_text()))
    if original is not None:  # an original format: its module builds the native model and processor
        model, processor = original.implementation().random_model(folder, config, tokenizer, dtype=dtype,
                                                                   attn_implementation=attn, seed=seed)
        return model.to(device).eval(), processor, scale
    for key, value in special_token_ids(family, tokenizer).items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = _processor(config.model_type, folder, tokenizer, AutoImageProcessor.from_pretrained(folder),
                           AutoVideoProcessor.from_pretrained(folder))
    return model.to(device).eval(), processor, scale


def _random_nvila(folder: Path, *, device: torch.device, dtype: torch.dtype, attn: str, width_scale: float | None,
                  seed: int) -> tuple[Any, Any, float]:
    """An NVILA (VILA's published layout: config.json, llm/, vision_tower/, mm_projector/) with random weights, the
    tiny tokenizer with VILA's media tokens, and the checkpoint's image-processor settings."""
    from framefusion.models.nvila import random_model, read_config
    from framefusion.tiny.nvila import nvila_tokenizer

    config = read_config(folder)
    scale = default_width_scale(config, device, dtype) if width_scale is None else width_scale
    config = scaled_config(config, scale)
    model, processor = random_model(config, nvila_tokenizer(config.num_time_tokens), dtype=dtype,
                                    attn_implementation=attn, seed=seed)
    return model.to(device).eval(), processor, scale


def _processor(model_type: str, folder: Path, tokenizer: Any, image_processor: Any, video_processor: Any) -> Any:
    """The family's processor class with the checkpoint's processor settings and the tiny tokenizer."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    settings_file = folder / "processor_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    settings = {key: value for key, value in settings.items()  # plain settings (num_image_tokens, ...) only
                if key not in ("processor_class", "image_processor", "video_processor", "tokenizer", "chat_template")}
    processor_class = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
    return processor_class(image_processor=image_processor, video_processor=video_processor, tokenizer=tokenizer,
                           chat_template=tokenizer.chat_template, **settings)
