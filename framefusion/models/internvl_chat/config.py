"""config.json of an InternVL2 / 2.5 remote-code checkpoint (model_type "internvl_chat") as transformers configs.

The original config holds `vision_config` (InternViT: InternVisionConfig) and `llm_config` (an InternLM2, Qwen2 or
Llama config). They become an InternVLVisionConfig (transformers' InternViT) and a LlamaConfig (InternLM2's math is
Llama's with fused projections, see weights.py) or Qwen2Config, inside an InternVLChatConfig: transformers'
InternVLConfig with model_type "internvl_chat" and the original chat settings (template, tiling, pixel shuffle).
"""

from __future__ import annotations

from typing import Any

from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig, Qwen2Config

INTERNLM2, QWEN2, LLAMA = "InternLM2ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"
SUPPORTED_LLMS = (INTERNLM2, QWEN2, LLAMA)
CHAT_KEYS = {  # original top-level settings kept on the config, with the original code's defaults
    "template": None, "system_message": None, "select_layer": -1, "force_image_size": None, "downsample_ratio": 0.5,
    "ps_version": "v1", "dynamic_image_size": False, "use_thumbnail": False, "min_dynamic_patch": 1,
    "max_dynamic_patch": 6,
}


class InternVLChatConfig(InternVLConfig):
    """transformers' InternVL config under the remote-code format's model_type, with its chat settings."""

    model_type = "internvl_chat"


def llm_architecture(config: dict[str, Any]) -> str:
    """The LLM class the checkpoint names (config.json llm_config.architectures[0])."""
    llm = config.get("llm_config") or {}
    names = llm.get("architectures") or [""]
    return names[0]


def rope_parameters(llm: dict[str, Any]) -> dict[str, Any]:
    """The LLM's rotary settings in transformers' form: theta and the original rope_scaling (linear or dynamic NTK)."""
    theta = float(llm.get("rope_theta", 10000.0))
    scaling = llm.get("rope_scaling") or None
    if scaling is None:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("type") or scaling.get("rope_type")
    if kind not in ("linear", "dynamic"):
        raise ValueError(f"llm_config.rope_scaling type {kind!r} is not supported (the original code knows 'linear' "
                         "and 'dynamic')")
    return {"rope_type": kind, "factor": float(scaling["factor"]), "rope_theta": theta}


def text_config(llm: dict[str, Any]) -> LlamaConfig | Qwen2Config:
    """The decoder's transformers config: InternLM2 and Llama as LlamaConfig, Qwen2 as Qwen2Config."""
    architecture = (llm.get("architectures") or [""])[0]
    if architecture not in SUPPORTED_LLMS:
        raise ValueError(f"InternVL checkpoints with a {architecture or 'missing'} LLM are not supported; supported: "
                         f"{', '.join(SUPPORTED_LLMS)}")
    heads = int(llm["num_attention_heads"])
    common = dict(
        vocab_size=int(llm["vocab_size"]), hidden_size=int(llm["hidden_size"]),
        intermediate_size=int(llm["intermediate_size"]), num_hidden_layers=int(llm["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(llm.get("num_key_value_heads") or heads),
        hidden_act=llm.get("hidden_act", "silu"), max_position_embeddings=int(llm.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(llm.get("rms_norm_eps", 1e-6)), rope_parameters=rope_parameters(llm),
        tie_word_embeddings=False, bos_token_id=llm.get("bos_token_id"), eos_token_id=llm.get("eos_token_id"),
        pad_token_id=llm.get("pad_token_id"),
    )
    if architecture == QWEN2:
        if llm.get("use_sliding_window"):
            raise ValueError("llm_config.use_sliding_window=true is not supported (InternVL2.5's Qwen2 LLMs attend "
                             "over the whole sequence)")
        return Qwen2Config(**common, use_sliding_window=False)
    bias = bool(llm.get("bias", True)) if architecture == INTERNLM2 else bool(llm.get("attention_bias", False))
    return LlamaConfig(**common, attention_bias=bias, mlp_bias=bool(llm.get("mlp_bias", False)),
                       head_dim=int(llm["hidden_size"]) // heads)


def vision_config(vision: dict[str, Any]) -> InternVLVisionConfig:
    """InternViT's config in transformers' form: fused qkv bias -> attention_bias, qk_normalization -> use_qk_norm,
    no final norm (use_mean_pooling leaves it an identity; the CLS token is dropped before pixel shuffle). Its position
    embeddings are interpolated (bicubic) when tiles differ from image_size, as the original always does."""
    if vision.get("norm_type", "rms_norm") not in ("rms_norm", "layer_norm"):
        raise ValueError(f"vision_config.norm_type {vision.get('norm_type')!r} is not supported")
    return InternVLVisionConfig(
        hidden_size=int(vision["hidden_size"]), num_hidden_layers=int(vision["num_hidden_layers"]),
        num_attention_heads=int(vision["num_attention_heads"]), intermediate_size=int(vision["intermediate_size"]),
        attention_bias=bool(vision.get("qkv_bias", False)), use_qk_norm=bool(vision.get("qk_normalization", False)),
        hidden_act=vision.get("hidden_act", "gelu"), norm_type=vision.get("norm_type", "rms_norm"),
        layer_norm_eps=float(vision.get("layer_norm_eps", 1e-6)), image_size=int(vision.get("image_size", 448)),
        patch_size=int(vision.get("patch_size", 14)), num_channels=int(vision.get("num_channels", 3)),
        use_mean_pooling=True, use_absolute_position_embeddings=True,
    )


def build_config(raw: dict[str, Any], image_token_id: int,
                 overrides: dict[str, Any] | None = None) -> InternVLChatConfig:
    """The native config of an original config.json (`overrides`: chat settings replaced by --model-arg)."""
    chat = {key: raw.get(key, default) for key, default in CHAT_KEYS.items()}
    chat.update(overrides or {})
    vision_raw = raw.get("vision_config") or {}
    image_size = int(chat["force_image_size"] or vision_raw.get("image_size", 448))
    patch = int(vision_raw.get("patch_size", 14))
    ratio = float(chat["downsample_ratio"])
    if chat["ps_version"] not in ("v1", "v2"):
        raise ValueError(f"ps_version {chat['ps_version']!r} is not supported (v1 or v2)")
    tokens = round((image_size // patch) ** 2 * ratio ** 2)
    config = InternVLChatConfig(
        vision_config=vision_config(vision_raw), text_config=text_config(raw.get("llm_config") or {}),
        image_token_id=image_token_id, image_seq_length=tokens, downsample_ratio=ratio, projector_hidden_act="gelu",
        vision_feature_layer=int(chat["select_layer"]), vision_feature_select_strategy="default",
        tie_word_embeddings=False, llm_architecture=llm_architecture(raw), **{k: v for k, v in chat.items()
                                                                               if k not in ("downsample_ratio",)},
    )
    return config
