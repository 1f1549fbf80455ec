"""MiniCPM-V 2.6's config.json (remote-code format, architectures ["MiniCPMV"], version 2.6) as a transformers config.

The original config is one flat Qwen2 config (the LLM's keys at the top level) with the vision tower's keys under
`vision_config` and a few MiniCPM-V keys (query_num, slice_config, use_image_id, drop_vision_last_layer, ...).
Here it becomes a composite config: `text_config` (transformers' Qwen2Config), `vision_config` (transformers'
Idefics2VisionConfig, which describes the same NaViT SigLIP encoder) and the MiniCPM-V keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Idefics2VisionConfig, PretrainedConfig, Qwen2Config

MODEL_TYPE = "minicpmv2_6"  # unique to this format: the adapter keys on it (the original says "minicpmv")
VERSION = 2.6

# The LLM's keys in the flat original config (everything Qwen2Config reads that the original sets)
TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
    "bos_token_id", "eos_token_id", "tie_word_embeddings",
)  # fmt: skip
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")
# SigLIP-400M as the original's config class fills it in when vision_config is absent
DEFAULT_VISION = {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304, "num_attention_heads": 16,
                  "num_hidden_layers": 27, "patch_size": 14}


class MiniCPMV26Config(PretrainedConfig):
    """MiniCPM-V 2.6: a Qwen2 text config, a NaViT SigLIP vision config and the resampler / slicing settings."""

    model_type = MODEL_TYPE

    def __init__(self, text_config: Qwen2Config | None = None, vision_config: Idefics2VisionConfig | None = None,
                 query_num: int = 64, image_size: int = 448, drop_vision_last_layer: bool = False,
                 max_slice_nums: int = 9, use_image_id: bool = True, vision_batch_size: int = 16,
                 image_token_id: int | None = None, version: float = VERSION, **kwargs: Any):
        super().__init__(**kwargs)
        self.text_config = text_config if text_config is not None else Qwen2Config()
        self.vision_config = vision_config if vision_config is not None else Idefics2VisionConfig(**DEFAULT_VISION)
        self.query_num = query_num  # resampler queries: LLM tokens per image slice
        self.image_size = image_size  # the slicing's scale resolution (a 448x448 slice gives query_num tokens)
        self.drop_vision_last_layer = drop_vision_last_layer
        self.max_slice_nums = max_slice_nums  # slice_config.max_slice_nums: slices of an image (not of a video)
        self.use_image_id = use_image_id
        self.vision_batch_size = vision_batch_size
        self.image_token_id = image_token_id  # "<unk>": the placeholder the features replace (from the tokenizer)
        self.version = version

    @property
    def resampler_heads(self) -> int:
        """The resampler's attention heads: the LLM width over 128, as the original builds it."""
        return self.text_config.hidden_size // 128


def is_minicpmv_2_6(config: Mapping[str, Any]) -> bool:
    """Whether a config.json is MiniCPM-V 2.6 in its remote-code format (not 2.0/2.5/4.x, nor MiniCPM-o)."""
    try:
        version = float(config.get("version", "nan"))
    except (TypeError, ValueError):
        return False
    return "MiniCPMV" in (config.get("architectures") or ()) and abs(version - VERSION) < 1e-9


def parse_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> MiniCPMV26Config:
    """A MiniCPMV26Config from the original config.json (a dict); ValueError naming what does not fit."""
    if not is_minicpmv_2_6(raw):
        raise ValueError(f"not a MiniCPM-V 2.6 config (architectures {raw.get('architectures')}, "
                         f"version {raw.get('version')})")
    text = {key: raw[key] for key in TEXT_KEYS if key in raw}
    text.setdefault("tie_word_embeddings", False)
    vision = {key: value for key, value in (raw.get("vision_config") or DEFAULT_VISION).items() if key in VISION_KEYS}
    if raw.get("drop_vision_last_layer", False):  # the original builds all layers, then drops the last one
        vision["num_hidden_layers"] = int(vision.get("num_hidden_layers", 27)) - 1
    slicing = raw.get("slice_config") or {}
    settings = dict(
        query_num=int(raw.get("query_num", 64)),
        image_size=int(raw.get("image_size", 448)),
        drop_vision_last_layer=bool(raw.get("drop_vision_last_layer", False)),
        max_slice_nums=int(slicing.get("max_slice_nums", 1)),
        use_image_id=bool(raw.get("use_image_id", True)),
        vision_batch_size=int(raw.get("vision_batch_size", 16)),
    )
    settings.update(overrides or {})
    config = MiniCPMV26Config(text_config=Qwen2Config(**text), vision_config=Idefics2VisionConfig(**vision),
                              **settings)
    if config.text_config.hidden_size < 128 or config.text_config.hidden_size % 128:
        raise ValueError(f"the resampler has hidden_size // 128 heads of 128 channels: hidden_size "
                         f"{config.text_config.hidden_size} is not a positive multiple of 128")
    return config
