"""The SigLIP tower of a LlavaQwen checkpoint: its configuration and how many of its layers the features use.

LLaVA-NeXT builds the tower from the repository `mm_vision_tower` names (google/siglip-so400m-patch14-384 for every
LLaVA-Video and LLaVA-OneVision checkpoint), read through the Hugging Face cache, drops the tower's last encoder
layer and its pooling head, and takes the output of the layer before (no post-layernorm). The checkpoint holds the
weights of the layers kept. Here the configuration is looked up in this order:

1. `mm_vision_tower` as a local directory with a config.json;
2. `mm_vision_tower` as a hub id whose config.json is in the local Hugging Face cache (nothing is downloaded);
3. otherwise the published configuration of google/siglip-so400m-patch14-384 (its config.json's vision_config,
   which is also what LLaVA-NeXT's own SigLipVisionConfig defaults to), with every size the checkpoint's weights
   fix (width, FFN width, depth, patch size, patches per side) read from the weights; the image size stays 384
   where 384 // patch size gives that many patches per side (so400m: 384 // 14 = 27), else patches x patch size. The head count, activation and
   layer-norm epsilon cannot be read from weights: they stay so400m's (16 heads, gelu_pytorch_tanh, 1e-6).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import SiglipVisionConfig

from framefusion.models.llava_next.weights import CheckpointWeights

SO400M_384 = {  # google/siglip-so400m-patch14-384, config.json "vision_config" (with the SigLIP defaults it relies on)
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}
SO400M_NAME = "google/siglip-so400m-patch14-384"
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
CONFIG_FIELDS = tuple(SO400M_384)


def tower_config(name: str, weights: CheckpointWeights | None, select_layer: int) -> tuple[SiglipVisionConfig, str]:
    """(config of the layers the features use, where the tower's configuration came from); weights None: a
    random-weight build, which takes so400m's published sizes when the configuration is not cached."""
    if "siglip" not in name.lower() and not Path(name).expanduser().is_dir():
        raise ValueError(f"mm_vision_tower={name!r}: only SigLIP towers are supported (LlavaQwen checkpoints use "
                         "google/siglip-so400m-patch14-384)")
    found = _configured(name)
    if found is not None:
        values, source = found
    elif weights is None:
        values = dict(SO400M_384)
        source = f"{name} is not in the local Hugging Face cache: the published {SO400M_NAME} configuration"
    else:
        values = _from_weights(weights)
        source = (f"{name} is not in the local Hugging Face cache: the published {SO400M_NAME} configuration, "
                  "sizes from the weights")
    total = int(values["num_hidden_layers"])
    values["num_hidden_layers"] = layers_used(total, select_layer)
    have = weights.count_layers(TOWER_PREFIX + "encoder.layers.") if weights is not None else values["num_hidden_layers"]
    if have < values["num_hidden_layers"]:
        raise ValueError(f"the checkpoint holds {have} vision-tower layers but mm_vision_select_layer="
                         f"{select_layer} of a {total}-layer tower needs {values['num_hidden_layers']}")
    return SiglipVisionConfig(**values, vision_use_head=False), source


def layers_used(total: int, select_layer: int) -> int:
    """Encoder layers up to hidden_states[select_layer] of a `total`-layer tower (-2 of 27: 26, as LLaVA-NeXT)."""
    used = select_layer if select_layer >= 0 else total + 1 + select_layer
    if not 0 <= used <= total:
        raise ValueError(f"mm_vision_select_layer={select_layer} is outside a {total}-layer tower")
    return used


def _configured(name: str) -> tuple[dict[str, Any], str] | None:
    """The tower's vision configuration from a local directory or the local hub cache, or None if neither has it."""
    try:
        config, _ = SiglipVisionConfig.get_config_dict(str(Path(name).expanduser()) if Path(name).expanduser().is_dir()
                                                       else name, local_files_only=True)
    except (OSError, ValueError):
        return None
    config = config.get("vision_config", config) if config.get("model_type") == "siglip" else config
    values = {**SO400M_384, **{key: config[key] for key in CONFIG_FIELDS if config.get(key) is not None}}
    return values, f"{name} (config.json from the local Hugging Face cache or directory)"


def _from_weights(weights: CheckpointWeights) -> dict[str, Any]:
    """so400m's configuration with the sizes the checkpoint's tower weights fix."""
    patch = weights.shape(TOWER_PREFIX + "embeddings.patch_embedding.weight")  # [width, channels, p, p]
    positions = weights.shape(TOWER_PREFIX + "embeddings.position_embedding.weight")  # [patches, width]
    ffn = weights.shape(TOWER_PREFIX + "encoder.layers.0.mlp.fc1.weight")  # [ffn, width]
    side = math.isqrt(positions[0])
    values = dict(SO400M_384)
    image_size = SO400M_384["image_size"] if SO400M_384["image_size"] // patch[2] == side else side * patch[2]
    values.update(hidden_size=patch[0], num_channels=patch[1], patch_size=patch[2], image_size=image_size,
                  intermediate_size=ffn[0],
                  num_hidden_layers=weights.count_layers(TOWER_PREFIX + "encoder.layers.") + 1)  # LLaVA drops one
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ValueError(f"the vision tower's width {values['hidden_size']} does not divide into so400m's "
                         f"{values['num_attention_heads']} heads; put the tower's config.json in the Hugging Face "
                         "cache (hf download NAME config.json)")
    return values
