"""NVILA's checkpoint configuration: the top-level config.json plus the llm/, vision_tower/ and mm_projector/ folders.

A published NVILA checkpoint (VILA's `LlavaLlamaModel`, model_type `llava_llama`) keeps its parts in sub-folders:
`llm/` (a Qwen2 causal LM with the tokenizer and chat template), `vision_tower/` (a SigLIP vision model and its
image-processor config) and `mm_projector/` (the projector, `mm_projector_type` in its config.json). The top-level
config.json holds the media settings (image tiling, the video encoder, the vision feature layer, ...). Where its
`llm_cfg` / `vision_tower_cfg` / `mm_projector_cfg` are dicts, VILA reads the parts from the sub-folders, and so does
this module; the dict copies are not used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig, SiglipVisionConfig

MODEL_TYPE = "llava_llama"
ARCHITECTURE = "LlavaLlamaModel"
IMAGE_TOKEN = "<image>"  # VILA's media tokens, one per image / video in the prompt text
VIDEO_TOKEN = "<vila/video>"
SENTINEL_TOKEN = "<vila/sentinel>"  # added by VILA's tokenizer setup (to find the stop tokens)
DEFAULT_END_TOKENS = "\n"  # the media encoders' default: "\n" after each image and each (pooled) frame
TSP_ENCODER = "TSPVideoEncoder"


class NVILAConfigError(ValueError):
    """A config.json this module cannot build a model from, with what is wrong."""


@dataclass(frozen=True)
class MediaEncoder:
    """How encoded frames become prompt tokens (VILA's Basic / TSP image and video encoders).

    Each pool size (t, h, w) averages t consecutive frames and h x w neighbouring tokens; every pooled frame
    ("group") is written as start tokens, its tokens, end tokens; each pool size's run ends with the sep tokens.
    The Basic encoders are the case of one pool size (1, 1, 1) and no sep tokens.
    """

    pool_sizes: tuple[tuple[int, int, int], ...] = ((1, 1, 1),)
    start_tokens: str | None = None
    end_tokens: str | None = DEFAULT_END_TOKENS
    sep_tokens: str | None = None

    @property
    def temporal_pool(self) -> int:
        """Frames averaged into one group by the first pool size (the authors' FrameFusion reads this one)."""
        return self.pool_sizes[0][0]

    @property
    def frame_multiple(self) -> int:
        """A video's frame count must be a multiple of this (every pool size groups whole frames)."""
        multiple = 1
        for t, _h, _w in self.pool_sizes:
            multiple = multiple * t // _gcd(multiple, t)
        return multiple


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def parse_encoder(spec: Any, what: str) -> MediaEncoder:
    """A MediaEncoder from config.json's image_encoder / video_encoder (a dict or its JSON string; None: Basic)."""
    if spec is None:
        return MediaEncoder()
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError as error:
            raise NVILAConfigError(f"{what} is not valid JSON: {spec!r}") from error
    if not isinstance(spec, dict):
        raise NVILAConfigError(f"{what} must be a mapping with `_target_`, got {spec!r}")
    target = str(spec.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    start, end, sep = spec.get("start_tokens"), spec.get("end_tokens", DEFAULT_END_TOKENS), spec.get("sep_tokens")
    if name in ("BasicImageEncoder", "BasicVideoEncoder"):
        return MediaEncoder(((1, 1, 1),), start, end, None)
    if name == TSP_ENCODER:
        sizes = spec.get("pool_sizes")
        if not sizes or any(len(size) != 3 for size in sizes):
            raise NVILAConfigError(f"{what}: TSPVideoEncoder needs pool_sizes [[t, h, w], ...], got {sizes!r}")
        return MediaEncoder(tuple(tuple(int(p) for p in size) for size in sizes), start, end, sep)
    raise NVILAConfigError(f"{what}: unsupported encoder {target!r} (supported: BasicImageEncoder, "
                           f"BasicVideoEncoder, TSPVideoEncoder)")


class NVILAConfig(PretrainedConfig):
    """The parts' configs (text_config: the LLM's, vision_config: SigLIP's) and NVILA's media settings."""

    model_type = MODEL_TYPE

    def __init__(self, text_config: PretrainedConfig | None = None, vision_config: SiglipVisionConfig | None = None,
                 projector_type: str = "mlp_downsample_2x2_fix", mm_vision_select_layer: int = -2,
                 mm_vision_select_feature: str = "cls_patch", image_aspect_ratio: str | None = "resize",
                 dynamic_s2: bool = False, s2_scales: tuple[int, ...] = (), s2_resize_output_to_scale_idx: int = 0,
                 min_tiles: int = 1, max_tiles: int = 12, num_video_frames: int | None = None,
                 num_time_tokens: int = 0, time_token_format: str = "<t{t}>", chat_template: str | None = None,
                 image_encoder: MediaEncoder | None = None, video_encoder: MediaEncoder | None = None,
                 image_processor: dict | None = None, image_token_id: int | None = None,
                 video_token_id: int | None = None, **kwargs: Any):
        self.text_config = text_config
        self.vision_config = vision_config
        self.projector_type = projector_type
        self.mm_vision_select_layer = int(mm_vision_select_layer)
        self.mm_vision_select_feature = mm_vision_select_feature
        self.image_aspect_ratio = image_aspect_ratio
        self.dynamic_s2 = bool(dynamic_s2)
        self.s2_scales = tuple(int(s) for s in s2_scales)
        self.s2_resize_output_to_scale_idx = int(s2_resize_output_to_scale_idx)
        self.min_tiles = int(min_tiles)
        self.max_tiles = int(max_tiles)
        self.num_video_frames = num_video_frames
        self.num_time_tokens = int(num_time_tokens or 0)
        self.time_token_format = time_token_format
        self.chat_template = chat_template
        self.image_encoder = image_encoder or MediaEncoder()
        self.video_encoder = video_encoder or MediaEncoder()
        self.image_processor = dict(image_processor or {})
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        super().__init__(**kwargs)
        if vision_config is not None:  # sampled frames per grid frame, read by the `uniform` method
            vision_config.temporal_patch_size = self.video_encoder.temporal_pool

    @property
    def mm_hidden_size(self) -> int:
        """Width of the features the projector takes: SigLIP's, times the number of scales under dynamic S2."""
        width = self.vision_config.hidden_size
        return width * len(self.s2_scales) if self.dynamic_s2 else width

    @property
    def image_size(self) -> int:
        """Side of one tile (a video frame) fed to SigLIP: the processor's size (the first S2 scale under S2)."""
        return self.s2_scales[0] if self.dynamic_s2 else int(self.vision_config.image_size)

    @property
    def patches_per_side(self) -> int:
        """SigLIP patches per side of a tile."""
        return self.image_size // int(self.vision_config.patch_size)

    def to_dict(self) -> dict[str, Any]:
        """Serializable form (the encoders as plain dicts)."""
        output = super().to_dict()
        for key in ("image_encoder", "video_encoder"):
            encoder = getattr(self, key)
            output[key] = {"pool_sizes": [list(p) for p in encoder.pool_sizes], "start_tokens": encoder.start_tokens,
                           "end_tokens": encoder.end_tokens, "sep_tokens": encoder.sep_tokens}
        return output


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or NVILAConfigError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NVILAConfigError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise NVILAConfigError(f"{path} is not a JSON object")
    return data


def _scales(value: Any) -> tuple[int, ...]:
    """s2_scales as VILA writes them: "448,896,1344" or a list; sorted ascending as VILA sorts them."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(sorted(int(s) for s in items))


def read_config(folder: str | Path, overrides: dict[str, Any] | None = None) -> NVILAConfig:
    """The NVILAConfig of a checkpoint folder in the published layout (sub-folders llm/, vision_tower/,
    mm_projector/); `overrides` replace top-level keys (e.g. image_aspect_ratio) before parsing."""
    folder = Path(folder)
    top = {**read_json(folder / "config.json"), **(overrides or {})}
    if ARCHITECTURE not in (top.get("architectures") or ()) and top.get("model_type") != MODEL_TYPE:
        raise NVILAConfigError(f"{folder / 'config.json'} is not an NVILA ({ARCHITECTURE}) config")
    for part in ("llm", "vision_tower", "mm_projector"):
        if not (folder / part / "config.json").is_file():
            raise NVILAConfigError(f"{folder} has no {part}/config.json: NVILA checkpoints keep the LLM, the vision "
                                   "tower and the projector in the sub-folders llm/, vision_tower/ and mm_projector/")
    text_config = AutoConfig.from_pretrained(folder / "llm")
    vision_dict = read_json(folder / "vision_tower" / "config.json")
    if vision_dict.get("model_type") not in ("siglip_vision_model", None):
        raise NVILAConfigError(f"vision tower {vision_dict.get('model_type')!r} is not supported (SigLIP only)")
    vision_config = SiglipVisionConfig.from_pretrained(folder / "vision_tower")
    projector = read_json(folder / "mm_projector" / "config.json").get("mm_projector_type")
    if not projector:
        raise NVILAConfigError(f"{folder / 'mm_projector' / 'config.json'} has no mm_projector_type")
    preprocessor_file = folder / "vision_tower" / "preprocessor_config.json"
    image_processor = read_json(preprocessor_file) if preprocessor_file.is_file() else {}
    dynamic_s2 = bool(top.get("dynamic_s2") or False)
    scales = _scales(top.get("s2_scales"))
    if dynamic_s2 and len(scales) < 2:
        raise NVILAConfigError(f"dynamic_s2 needs s2_scales with at least two sizes, got {top.get('s2_scales')!r}")
    if top.get("s2") and not dynamic_s2:
        raise NVILAConfigError("S2 multi-scale features (s2: true) without dynamic_s2 are not supported")
    return NVILAConfig(
        text_config=text_config,
        vision_config=vision_config,
        projector_type=projector,
        mm_vision_select_layer=top.get("mm_vision_select_layer", -2),
        mm_vision_select_feature=top.get("mm_vision_select_feature") or "patch",
        image_aspect_ratio=top.get("image_aspect_ratio"),
        dynamic_s2=dynamic_s2,
        s2_scales=scales,
        s2_resize_output_to_scale_idx=top.get("s2_resize_output_to_scale_idx") or 0,
        min_tiles=top.get("min_tiles") or 1,
        max_tiles=top.get("max_tiles") or 12,
        num_video_frames=top.get("num_video_frames"),
        num_time_tokens=top.get("num_time_tokens") or 0,
        time_token_format=top.get("time_token_format") or "<t{t}>",
        chat_template=top.get("chat_template"),
        image_encoder=parse_encoder(top.get("image_encoder"), "image_encoder"),
        video_encoder=parse_encoder(top.get("video_encoder"), "video_encoder"),
        image_processor=image_processor,
        architectures=[ARCHITECTURE],
    )
