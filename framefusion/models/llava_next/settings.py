"""The multimodal keys of a LLaVA-NeXT config.json, with the defaults LLaVA-NeXT's code falls back to, and the
ones `--model-arg KEY=VALUE` may override (the keys lmms-eval's `llava_vid` / `llava_onevision` let users set)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

NEWLINE_POSITIONS = ("grid", "frame", "one_token", "no_token")
POOL_MODES = ("bilinear", "average", "max")
CONVERSATIONS = {  # conv_template: system prompt of LLaVA-NeXT's ChatML conversations (roles and separator shared)
    "qwen_1_5": "You are a helpful assistant.",
    "qwen_2": "You are a helpful assistant.",
    "qwen_2_5": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}

MODEL_ARGS = {
    "mm_newline_position": "where video features get the image_newline token: grid (after every row of every "
                           "frame), frame (after every frame), one_token (once after the video), no_token",
    "mm_spatial_pool_mode": "how each frame's feature grid is pooled: bilinear, average or max",
    "mm_spatial_pool_stride": "the pooling stride (2: a 27x27 SigLIP grid becomes 14x14 bilinear, 13x13 otherwise)",
    "image_aspect_ratio": "how images are tiled: anyres_max_N, anyres, pad or square",
    "add_time_instruction": "true: put lmms-eval llava_vid's time instruction (video length, frame times) before "
                            "the question",
    "max_frames_num": "the most frames per video the processor passes on (more are subsampled uniformly, as "
                      "np.linspace does in llava_vid)",
    "conv_template": f"the conversation: {', '.join(CONVERSATIONS)} (qwen_1_5, lmms-eval's default, unless given)",
}


@dataclass(frozen=True)
class MultimodalSettings:
    """How a LlavaQwen checkpoint turns pixels into LLM tokens and how its prompt is written."""

    mm_projector_type: str = "linear"
    mm_hidden_size: int | None = None
    mm_vision_tower: str = ""
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_patch_merge_type: str = "flat"
    mm_newline_position: str = "one_token"
    mm_spatial_pool_mode: str = "bilinear"
    mm_spatial_pool_stride: int = 2
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: Any = None
    add_faster_video: bool = False
    faster_token_stride: int = 10
    mm_use_im_start_end: bool = False
    tokenizer_model_max_length: int | None = None
    # prompt-side settings (lmms-eval model_args, not config.json keys)
    add_time_instruction: bool = False
    max_frames_num: int | None = None
    conv_template: str = "qwen_1_5"

    @property
    def unpad(self) -> bool:
        """Whether newline tokens exist at all (LLaVA-NeXT adds image_newline only for *unpad merge types)."""
        return "unpad" in self.mm_patch_merge_type

    @property
    def spatial(self) -> bool:
        """Whether features keep their 2-D arrangement (spatial*) rather than being flattened (flat)."""
        return self.mm_patch_merge_type.startswith("spatial")

    @property
    def anyres_max(self) -> int | None:
        """N of image_aspect_ratio anyres_max_N, else None."""
        match = re.match(r"anyres_max_(\d+)", self.image_aspect_ratio)
        return int(match.group(1)) if match else None

    @property
    def anyres(self) -> bool:
        """Whether images are tiled over image_grid_pinpoints."""
        return self.image_aspect_ratio == "anyres" or "anyres_max" in self.image_aspect_ratio

    def to_original(self) -> dict[str, Any]:
        """The config.json keys these settings came from (prompt-side settings left out)."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}


PROMPT_KEYS = ("add_time_instruction", "max_frames_num", "conv_template")  # lmms-eval model_args, not config keys
CONFIG_KEYS = tuple(f.name for f in fields(MultimodalSettings) if f.name not in PROMPT_KEYS)


def settings_from_config(config: Mapping[str, Any], model_args: Mapping[str, str] | None = None) -> MultimodalSettings:
    """The settings of a config.json dict, with `model_args` (strings, as --model-arg gives them) applied."""
    values = {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None}
    settings = MultimodalSettings(**values)
    if model_args:
        settings = replace(settings, **{key: _parse(key, value) for key, value in model_args.items()})
    check_settings(settings)
    return settings


def check_settings(settings: MultimodalSettings) -> None:
    """ValueError for a setting this implementation (and LLaVA-NeXT) cannot run."""
    if settings.mm_newline_position not in NEWLINE_POSITIONS:
        raise ValueError(f"mm_newline_position={settings.mm_newline_position!r}: expected one of "
                         f"{', '.join(NEWLINE_POSITIONS)}")
    if settings.mm_spatial_pool_mode not in POOL_MODES:
        raise ValueError(f"mm_spatial_pool_mode={settings.mm_spatial_pool_mode!r}: expected one of "
                         f"{', '.join(POOL_MODES)}")
    if settings.mm_spatial_pool_stride < 1:
        raise ValueError(f"mm_spatial_pool_stride={settings.mm_spatial_pool_stride}: expected an integer >= 1")
    if settings.conv_template not in CONVERSATIONS:
        raise ValueError(f"conv_template={settings.conv_template!r}: expected one of {', '.join(CONVERSATIONS)}")
    if settings.max_frames_num is not None and settings.max_frames_num < 1:
        raise ValueError(f"max_frames_num={settings.max_frames_num}: expected an integer >= 1")
    if settings.add_faster_video:
        raise ValueError("add_faster_video=true is not supported: LLaVA-NeXT's own code cannot run it (its "
                         "prepare_inputs_labels_for_multimodal reads all_faster_video_features, which it never "
                         "computes), so there is no reference behaviour; the released checkpoints set it false")
    if settings.mm_use_im_start_end:
        raise ValueError("mm_use_im_start_end=true checkpoints are not supported (no LLaVA-Video or OneVision "
                         "checkpoint uses it)")
    if not (settings.spatial or settings.mm_patch_merge_type == "flat"):
        raise ValueError(f"mm_patch_merge_type={settings.mm_patch_merge_type!r}: expected flat or spatial*")
    if "maxpool2x2" in settings.mm_patch_merge_type:
        raise ValueError("mm_patch_merge_type with maxpool2x2 is not supported")
    if settings.mm_vision_select_feature not in ("patch", "cls_patch"):
        raise ValueError(f"mm_vision_select_feature={settings.mm_vision_select_feature!r}: expected patch or "
                         "cls_patch (SigLIP has no CLS token, so both take every patch)")
    if not re.fullmatch(r"mlp\d+x_gelu|linear", settings.mm_projector_type):
        raise ValueError(f"mm_projector_type={settings.mm_projector_type!r}: expected linear or mlpNx_gelu")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse(key: str, value: str) -> Any:
    """A --model-arg value as the setting's type."""
    if key in ("add_time_instruction",):
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise ValueError(f"{key}={value!r}: expected true or false")
        return text in _TRUE
    if key in ("mm_spatial_pool_stride", "max_frames_num"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected an integer") from None
    return str(value)
