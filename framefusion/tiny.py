"""Tiny random checkpoints of the supported video-LLM families, for tests, examples and benchmarks.

Every model is the stock Hugging Face class with a tiny config and random weights; every processor is
the family's real processor class, built from local objects only (a BPE tokenizer trained here, small
image/video sizes). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "llava_next_video", "internvl")

PATCH_SIZE = 8  # vision patch side of every tiny model (the real models use 14 or 16)
MERGE_SIZE = 2  # Qwen-VL spatial merge (2x2 patches -> 1 token), as in the real models

# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A man is walking his dog in the park.",
    "What is happening in this video? Describe the video in detail. What color is the car?",
    "A woman is cooking dinner in the kitchen while a child plays with a red ball.",
    "The camera pans across a busy street with cars, buses and people crossing the road.",
    "Question: how many people are in the scene? Answer: there are three people.",
    "Please answer the question based on the video. Summarize what you see in one sentence.",
    "A cat sits on the window and watches the birds outside. Then it jumps down.",
    "The weather is sunny and the sky is blue. Later it starts to rain and the street gets wet.",
    "You are a helpful assistant. Yes. No. The answer is A, B, C or D.",
    "First, second, third, then, after that, finally, before, during, at the end of the clip.",
    "0 1 2 3 4 5 6 7 8 9 10 seconds frame image picture video clip scene object person.",
)

# Chat templates written in the style of each family's hub template. They accept content given as a
# string or as a list of {"type": "text" | "image" | "video"} blocks, and honour add_generation_prompt.
_QWEN_BODY = (
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
    "{% if add_vision_id %}{{ 'Picture ' ~ ns.images ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' %}{% set ns.videos = ns.videos + 1 %}"
    "{% if add_vision_id %}{{ 'Video ' ~ ns.videos ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
)
_QWEN2_TEMPLATE = (
    "{% set ns = namespace(images=0, videos=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    + _QWEN_BODY
    + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_QWEN3_TEMPLATE = (
    "{% set ns = namespace(images=0, videos=0) %}{% for message in messages %}"
    + _QWEN_BODY
    + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# LLaVA templates render all images, then all videos, then the text of a message.
_LLAVA_BLOCKS = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}"
)
_LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    + _LLAVA_BLOCKS
    + "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LLAVA_NEXT_VIDEO_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    + _LLAVA_BLOCKS
    + "{{ ' ' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class _TokenizerStyle:
    """Special tokens and chat template of one family's tokenizer."""

    special_tokens: tuple[str, ...]  # added in this order, ids 0..n-1
    eos: str
    pad: str
    chat_template: str
    bos: str | None = None  # prepended to every encoding when set (Llama style)
    unk: str | None = None
    named_tokens: dict[str, str] = field(default_factory=dict)  # tokenizer.<name> attributes


_QWEN_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
_TOKENIZER_STYLES = {
    "qwen2_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN2_TEMPLATE),
    "qwen2_5_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN2_TEMPLATE),
    "qwen3_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN3_TEMPLATE),
    "llava_onevision": _TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        "<|im_end|>",
        "<|endoftext|>",
        _LLAVA_ONEVISION_TEMPLATE,
    ),
    "llava_next_video": _TokenizerStyle(
        ("<unk>", "<s>", "</s>", "<image>", "<video>"),
        "</s>",
        "<unk>",
        _LLAVA_NEXT_VIDEO_TEMPLATE,
        bos="<s>",
        unk="<unk>",
    ),
    "internvl": _TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
        "<|im_end|>",
        "<|endoftext|>",
        _INTERNVL_TEMPLATE,
        named_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    ),
}


def build_tokenizer(
    corpus: list[str] | None = None, vocab_size: int = 512, family: str = "qwen2_vl"
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE with `family`'s special tokens and chat template."""
    style = _TOKENIZER_STYLES[_check_family(family)]
    bpe = Tokenizer(models.BPE(unk_token=style.unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(style.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*_CORPUS, *(corpus or [])], trainer=trainer)
    if style.bos is not None:
        bos_id = bpe.token_to_id(style.bos)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{style.bos} $A", pair=f"{style.bos} $A {style.bos} $B", special_tokens=[(style.bos, bos_id)]
        )
    else:
        bpe.post_processor = processors.ByteLevel(trim_offsets=False)

    named = dict(style.named_tokens)
    extra = [t for t in style.special_tokens if t not in {style.bos, style.eos, style.pad, style.unk, *named.values()}]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=style.bos,
        eos_token=style.eos,
        pad_token=style.pad,
        unk_token=style.unk,
        extra_special_tokens=named or extra,
        model_max_length=32768,
        chat_template=style.chat_template,
    )
    if named:  # named tokens replace the plain list; keep the rest special too
        tokenizer.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    return tokenizer


# ---------------------------------------------------------------------------------------------------
# Models and processors
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dims:
    """Sizes shared by every family's config."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vision_layers: int
    image_size: int

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads


def _text_kwargs(dims: _Dims, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Decoder sizes and special ids common to the Qwen2 / Llama style text configs."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        max_position_embeddings=32768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _mrope_section(head_dim: int, interleaved: bool) -> list[int]:
    """Split the head_dim/2 rotary frequencies over (t, h, w) in the proportions of the real models."""
    half = head_dim // 2
    if interleaved:  # Qwen3-VL: [24, 20, 20] of 64
        hw = half * 20 // 64
        return [half - 2 * hw, hw, hw]
    hw = (half - half // 4) // 2  # Qwen2-VL / 2.5-VL: [16, 24, 24] of 64
    return [half - 2 * hw, hw, hw]


def _config_kwargs(
    text: dict[str, Any], vision: dict[str, Any], top: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Top-level config kwargs; `overrides` wins, its text_config / vision_config dicts update the sub-configs."""
    overrides = dict(overrides)
    text = {**text, **overrides.pop("text_config", {})}
    vision = {**vision, **overrides.pop("vision_config", {})}
    return {**top, **overrides, "text_config": text, "vision_config": vision}


def _qwen_sizes(dims: _Dims) -> dict[str, Any]:
    """Image/video processor sizes: at most image_size**2 pixels per frame, at least 2x2 tokens."""
    factor = PATCH_SIZE * MERGE_SIZE
    return dict(
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": dims.image_size**2},
    )


def _build_qwen2_vl(dims, tokenizer, overrides):
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    text = _text_kwargs(dims, tokenizer)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": _mrope_section(dims.head_dim, interleaved=False),
    }
    vision = dict(
        depth=dims.vision_layers,
        embed_dim=dims.hidden_size,
        hidden_size=dims.hidden_size,  # merger output = LLM width
        num_heads=dims.num_heads,
        mlp_ratio=2,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(**_config_kwargs(text, vision, _qwen_token_ids(tokenizer), overrides))
    sizes = _qwen_sizes(dims)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes),
        video_processor=Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_qwen2_5_vl(dims, tokenizer, overrides):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    text = _text_kwargs(dims, tokenizer)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": _mrope_section(dims.head_dim, interleaved=False),
    }
    vision = dict(
        depth=dims.vision_layers,
        hidden_size=dims.hidden_size,
        intermediate_size=2 * dims.hidden_size,
        num_heads=dims.num_heads,
        out_hidden_size=dims.hidden_size,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        window_size=4 * PATCH_SIZE * MERGE_SIZE,  # 4x4 merged tokens per attention window
        fullatt_block_indexes=[dims.vision_layers - 1],
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(**_config_kwargs(text, vision, _qwen_token_ids(tokenizer), overrides))
    sizes = _qwen_sizes(dims)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes),
        video_processor=Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_qwen3_vl(dims, tokenizer, overrides):
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor

    text = _text_kwargs(dims, tokenizer)
    for key in ("bos_token_id", "eos_token_id", "tie_word_embeddings"):
        text.pop(key)
    text["head_dim"] = dims.head_dim
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": _mrope_section(dims.head_dim, interleaved=True),
        "mrope_interleaved": True,
    }
    vision = dict(
        depth=dims.vision_layers,
        hidden_size=dims.hidden_size,
        intermediate_size=2 * dims.hidden_size,
        num_heads=dims.num_heads,
        out_hidden_size=dims.hidden_size,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        num_position_embeddings=16**2,  # learned 16x16 grid, interpolated to each frame's grid
        deepstack_visual_indexes=list(range(min(3, dims.vision_layers))),
    )
    config = Qwen3VLConfig(**_config_kwargs(text, vision, _qwen_token_ids(tokenizer), overrides))
    sizes = _qwen_sizes(dims)
    half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    # Qwen3-VL bounds the pixels of the whole clip (t*h*w): here up to 64 frames of image_size**2
    video_sizes = {**sizes, "size": {**sizes["size"], "longest_edge": 64 * dims.image_size**2}}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes, **half),
        video_processor=Qwen3VLVideoProcessor(**video_sizes, **half, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _qwen_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _anyres_pinpoints(size: int) -> list[list[int]]:
    """Grid resolutions for LLaVA 'anyres' image tiling: up to 2x2 tiles of `size`."""
    return [[size * h, size * w] for h in (1, 2) for w in (1, 2)]


def _vit_kwargs(dims: _Dims, **extra: Any) -> dict[str, Any]:
    """A tiny ViT vision config (SigLIP, CLIP and InternViT take the same names)."""
    return dict(hidden_size=dims.hidden_size, intermediate_size=2 * dims.hidden_size,
                num_hidden_layers=dims.vision_layers, num_attention_heads=dims.num_heads, patch_size=PATCH_SIZE,
                image_size=dims.image_size, **extra)


def _build_llava_onevision(dims, tokenizer, overrides):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    vision = _vit_kwargs(dims, vision_use_head=False)
    pinpoints = _anyres_pinpoints(dims.image_size)
    ids = tokenizer.convert_tokens_to_ids
    top = dict(
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = Qwen2Config(**kwargs["text_config"])
    kwargs["vision_config"] = SiglipVisionConfig(**kwargs["vision_config"])
    config = LlavaOnevisionConfig(**kwargs)
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=square),
        tokenizer=tokenizer,
        num_image_tokens=(dims.image_size // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_llava_next_video(dims, tokenizer, overrides):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    vision = _vit_kwargs(dims, projection_dim=dims.hidden_size)
    pinpoints = _anyres_pinpoints(dims.image_size)
    patches = (dims.image_size // PATCH_SIZE) ** 2
    ids = tokenizer.convert_tokens_to_ids
    top = dict(
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="default",  # drop CLIP's CLS token
        vision_feature_layer=-2 if dims.vision_layers > 1 else -1,
        image_grid_pinpoints=pinpoints,
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        image_seq_length=patches,
        video_seq_length=patches // 4,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = LlamaConfig(**kwargs["text_config"])
    kwargs["vision_config"] = CLIPVisionConfig(**kwargs["vision_config"])
    config = LlavaNextVideoConfig(**kwargs)
    edge = {"shortest_edge": dims.image_size}
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size=edge, crop_size=square),
        image_processor=LlavaNextImageProcessor(size=edge, crop_size=square, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _build_internvl(dims, tokenizer, overrides):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    vision = _vit_kwargs(dims)
    image_seq_length = (dims.image_size // PATCH_SIZE) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5
    top = dict(
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    kwargs = _config_kwargs(_text_kwargs(dims, tokenizer), vision, top, overrides)
    kwargs["text_config"] = Qwen2Config(**kwargs["text_config"])
    kwargs["vision_config"] = InternVLVisionConfig(**kwargs["vision_config"])
    config = InternVLConfig(**kwargs)
    square = {"height": dims.image_size, "width": dims.image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=square, crop_to_patches=True, min_patches=1, max_patches=4),
        video_processor=InternVLVideoProcessor(size=square),
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


@dataclass(frozen=True)
class _Family:
    """How to build one family: its model class name, default image size and config/processor builder."""

    model_class: str
    image_size: int  # Qwen-VL: max frame side (dynamic resolution); others: the vision tower's input side
    build: Callable[[_Dims, PreTrainedTokenizerFast, dict[str, Any]], tuple[Any, Any]]  # -> (config, processor)


_FAMILY_TABLE = {
    "qwen2_vl": _Family("Qwen2VLForConditionalGeneration", 112, _build_qwen2_vl),
    "qwen2_5_vl": _Family("Qwen2_5_VLForConditionalGeneration", 112, _build_qwen2_5_vl),
    "qwen3_vl": _Family("Qwen3VLForConditionalGeneration", 112, _build_qwen3_vl),
    "llava_onevision": _Family("LlavaOnevisionForConditionalGeneration", 64, _build_llava_onevision),
    "llava_next_video": _Family("LlavaNextVideoForConditionalGeneration", 64, _build_llava_next_video),
    "internvl": _Family("InternVLForConditionalGeneration", 64, _build_internvl),
}


def _check_family(family: str) -> str:
    """`family`, or a ValueError naming the supported ones."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return family


def model_class(family: str) -> type:
    """The Hugging Face model class of `family`."""
    import transformers

    return getattr(transformers, _FAMILY_TABLE[_check_family(family)].model_class)


def build_tiny_model(
    family: str,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_layers: int = 1,
    image_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    **config_overrides: Any,
) -> tuple[torch.nn.Module, Any]:
    """Build a randomly initialised `family` model (eval mode) and its real processor class."""
    # image_size: Qwen-VL max frame side (default 112; smaller frames keep their size), else the vision
    # tower's input side (default 64). config_overrides go to the top-level config; text_config={...}
    # and vision_config={...} update the sub-config keyword arguments.
    spec = _FAMILY_TABLE[_check_family(family)]
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads and num_heads by num_kv_heads")
    dims = _Dims(
        num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size, vision_layers, image_size or spec.image_size
    )
    if dims.image_size % (PATCH_SIZE * MERGE_SIZE):
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE * MERGE_SIZE}")
    tokenizer = build_tokenizer(family=family)
    config, processor = spec.build(dims, tokenizer, dict(config_overrides))

    torch.manual_seed(seed)
    model = model_class(family)._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), processor


def save_tiny_checkpoint(family: str, path: str | Path, **kw: Any) -> Path:
    """Build a tiny `family` model and save model + processor to `path` for offline from_pretrained."""
    path = Path(path)
    model, processor = build_tiny_model(family, **kw)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
