"""The configuration of a native LlavaQwen model: a Qwen2 text config and a SigLIP vision config built from the
original config.json, plus the multimodal settings and the placeholder token ids of the processor."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from transformers import PretrainedConfig, Qwen2Config, SiglipVisionConfig

from framefusion.models.llava_next.settings import MultimodalSettings

MODEL_TYPE = "llava_qwen"  # what LLaVA-NeXT's LlavaQwenConfig calls itself at run time; transformers has no such type
QWEN2_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
              "rope_theta", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
              "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")


class LlavaQwenVideoConfig(PretrainedConfig):
    """text_config (Qwen2), vision_config (SigLIP, the layers the features use) and the multimodal settings."""

    model_type = MODEL_TYPE
    sub_configs = {"text_config": Qwen2Config, "vision_config": SiglipVisionConfig}

    def __init__(self, text_config: Any = None, vision_config: Any = None, mm_settings: dict | None = None,
                 video_token_id: int | None = None, image_token_id: int | None = None,
                 original_config: dict | None = None, vision_config_source: str = "", **kwargs: Any):
        self.text_config = Qwen2Config(**text_config) if isinstance(text_config, dict) else text_config or Qwen2Config()
        self.vision_config = SiglipVisionConfig(**vision_config) if isinstance(vision_config, dict) else \
            vision_config or SiglipVisionConfig()
        self.mm_settings = dict(mm_settings or {})
        self.video_token_id = video_token_id
        self.image_token_id = image_token_id
        self.original_config = dict(original_config or {})  # config.json as read (written back on save)
        self.vision_config_source = vision_config_source
        kwargs.setdefault("tie_word_embeddings", self.text_config.tie_word_embeddings)
        super().__init__(**kwargs)

    @property
    def settings(self) -> MultimodalSettings:
        """The multimodal settings in effect (config.json with any --model-arg applied)."""
        return MultimodalSettings(**self.mm_settings)


def qwen2_config(original: dict[str, Any]) -> Qwen2Config:
    """The LLM's config from the original (flat, Qwen2-style) config.json; rope_scaling is dropped as
    LlavaQwenForCausalLM does."""
    values = {key: original[key] for key in QWEN2_KEYS if key in original}
    if values.get("sliding_window") is None or not values.get("use_sliding_window", False):
        values["sliding_window"] = None
    return Qwen2Config(**values)


def build_config(original: dict[str, Any], settings: MultimodalSettings, vision: SiglipVisionConfig,
                 vision_source: str, video_token_id: int, image_token_id: int) -> LlavaQwenVideoConfig:
    """The native model's config."""
    text = qwen2_config(original)
    return LlavaQwenVideoConfig(
        text_config=text, vision_config=vision, mm_settings=asdict(settings), video_token_id=video_token_id,
        image_token_id=image_token_id, original_config=original, vision_config_source=vision_source,
        bos_token_id=original.get("bos_token_id"), eos_token_id=original.get("eos_token_id"),
        pad_token_id=original.get("pad_token_id"), architectures=["LlavaQwenForCausalLM"])
