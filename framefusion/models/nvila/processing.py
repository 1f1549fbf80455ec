"""NVILA's input pipeline: frames and images to SigLIP pixels, the chat prompt with VILA's media tokens, and each
media token expanded to the positions its features take in the LLM's input.

As in VILA's inference path: a message's media and text are joined without separators (media token, then the
text), stripped, and rendered by the LLM tokenizer's chat template. Every frame is resized (PIL bicubic) to the
tower's tile size and normalised as SigLIP's image processor does; a single image is tiled when
`image_aspect_ratio` is `dynamic` (tiles + thumbnail, one `<image>` per tile) or `dynamic_s2` (multi-scale
tiles, one `<image>`); other images are resized, or padded to a square with `pad`. The expansion writes, for
every group of pooled frames (every tile of an image), the encoder's start tokens, one placeholder per feature
token and the end tokens (by default one "\n"), plus the sep tokens after each pool size, so that the model
replaces exactly the placeholders with features and the rest is ordinary text, as VILA's embedding step builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from framefusion.models.nvila.config import (
    IMAGE_TOKEN,
    SENTINEL_TOKEN,
    VIDEO_TOKEN,
    MediaEncoder,
    NVILAConfig,
)
from framefusion.models.nvila.tiling import dynamic_s2_tiles, dynamic_tiles
from framefusion.models.processing import DecodesWithTokenizer, as_pil

# VILA's built-in "qwen2" chat template (used when config.json names it): a system line unless a system message is
# given, then every message as <|im_start|>role\ncontent<|im_end|>\n, then the generation prompt.
QWEN2_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}"
    "{% endif %}{% for message in messages if message['content'] is not none %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NAMED_TEMPLATES = {"qwen2": QWEN2_TEMPLATE}


class SiglipPixels:
    """SigLIP's image preprocessing as its image processor does it: resize to size x size (PIL, its resample),
    rescale (float64, then float32) and normalise."""

    def __init__(self, settings: dict[str, Any], size: int):
        self.size = size
        self.resample = int(settings.get("resample", 3))
        self.rescale = float(settings.get("rescale_factor", 1 / 255))
        self.mean = np.asarray(settings.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.std = np.asarray(settings.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.do_resize = settings.get("do_resize", True)
        self.do_rescale = settings.get("do_rescale", True)
        self.do_normalize = settings.get("do_normalize", True)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """[3, size, size] float32 pixels of one RGB PIL image."""
        if self.do_resize:
            image = image.resize((self.size, self.size), resample=self.resample)
        pixels = np.asarray(image)
        if self.do_rescale:
            pixels = (pixels.astype(np.float64) * self.rescale).astype(np.float32)
        else:
            pixels = pixels.astype(np.float32)
        if self.do_normalize:
            pixels = (pixels - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def pad_to_square(image: Image.Image, mean: np.ndarray) -> Image.Image:
    """The image centred on a square of the mean colour (image_aspect_ratio "pad")."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), tuple(int(x * 255) for x in mean))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class NVILAProcessor(DecodesWithTokenizer):
    """Chat template, pixels and the expanded prompt ids for an NVILA model (the interface framefusion's prompting
    uses: apply_chat_template, __call__(text=, videos=, images=, ...), .tokenizer)."""

    def __init__(self, config: NVILAConfig, tokenizer: Any, tokens_per_side: int):
        self.config = config
        self.tokenizer = tokenizer
        self.tokens_per_side = tokens_per_side  # LLM tokens per side of one tile after the projector
        self.pixels = SiglipPixels(config.image_processor, config.image_size)
        named = NAMED_TEMPLATES.get(config.chat_template) if config.chat_template else None
        if config.chat_template and named is None:
            raise ValueError(f"unknown chat_template {config.chat_template!r} in config.json (known: qwen2)")
        self.chat_template = named or getattr(tokenizer, "chat_template", None)
        if not self.chat_template:
            raise ValueError("the NVILA tokenizer (llm/) has no chat template")
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    # ---- prompt -------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> Any:
        """Render messages (content: a string, or blocks of type video / image / text) with VILA's media tokens."""
        flat = [{"role": m["role"], "content": self._flatten(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(flat, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    @staticmethod
    def _flatten(content: Any) -> str | None:
        """One message's content as VILA writes it: media tokens and text joined with nothing between, stripped."""
        if content is None or isinstance(content, str):
            return content.strip() if isinstance(content, str) else None
        parts = []
        for block in content:
            kind = block.get("type")
            if kind == "video":
                parts.append(VIDEO_TOKEN)
            elif kind == "image":
                parts.append(IMAGE_TOKEN)
            elif kind == "text":
                parts.append(block.get("text", ""))
            else:
                raise ValueError(f"unsupported content block {kind!r}")
        return "".join(parts).strip()

    # ---- media ----------------------------------------------------------------------------------------------
    def video_pixels(self, frames: Any) -> torch.Tensor:
        """[T, 3, S, S] pixels of one video's frames ([T, 3, H, W] or [T, H, W, 3] uint8, or a list of images)."""
        frames = list(frames) if not isinstance(frames, (torch.Tensor, np.ndarray)) else frames
        return torch.stack([self._single(as_pil(frame)) for frame in frames])

    def _single(self, image: Image.Image) -> torch.Tensor:
        """One image or frame as one tile: resized ("resize"), padded ("pad") or left to the processor's resize."""
        mode = self.config.image_aspect_ratio
        if mode == "resize":
            image = image.resize((self.config.image_size, self.config.image_size))
        elif mode == "pad":
            image = pad_to_square(image, self.pixels.mean)
        return self.pixels(image)

    def image_pixels(self, images: list[Any]) -> tuple[list[torch.Tensor], list[tuple[str, int, int]]]:
        """Pixels [tiles, 3, S, S] per image and how each was tiled: ("single" | "dynamic" | "s2", rows, cols)."""
        pils = [as_pil(image) for image in images]
        mode = self.config.image_aspect_ratio
        if len(pils) == 1 and mode == "dynamic":
            tiles = dynamic_tiles(pils[0], self.config.image_size, self.config.min_tiles, self.config.max_tiles)
            return [torch.stack([self.pixels(t) for t in tiles])], [("dynamic", len(tiles), 1)]
        if len(pils) == 1 and mode == "dynamic_s2":
            if not self.config.dynamic_s2:
                raise ValueError("image_aspect_ratio dynamic_s2 needs a dynamic_s2 model (config.json dynamic_s2)")
            tiles, (rows, columns) = dynamic_s2_tiles(pils[0], self.config.s2_scales, self.config.max_tiles)
            return [torch.stack([self.pixels(t) for t in tiles])], [("s2", rows, columns)]
        return [self._single(image)[None] for image in pils], [("single", 1, 1) for _ in pils]

    # ---- token expansion ------------------------------------------------------------------------------------
    def _text_ids(self, text: str | None) -> list[int]:
        return [] if text is None else list(self.tokenizer(text, add_special_tokens=True).input_ids)

    def media_ids(self, encoder: MediaEncoder, placeholder: int, frames: int, rows: int, cols: int) -> list[int]:
        """Prompt ids of one video of `frames` frames (or one image tile, frames=1) of rows x cols tokens."""
        start, end, sep = (self._text_ids(t) for t in (encoder.start_tokens, encoder.end_tokens, encoder.sep_tokens))
        ids: list[int] = []
        for t, h, w in encoder.pool_sizes:
            if frames % t or rows % h or cols % w:
                raise ValueError(f"NVILA pools {t} frames x {h}x{w} tokens: a video of {frames} frames of {rows}x{cols} "
                                 f"tokens cannot be pooled; sample a multiple of {encoder.frame_multiple} frames")
            group = start + [placeholder] * ((rows // h) * (cols // w)) + end
            ids += group * (frames // t) + sep
        return ids

    def __call__(self, text: Sequence[str] | str | None = None, videos: Sequence[Any] | None = None,
                 images: Sequence[Any] | None = None, return_tensors: str | None = "pt",
                 add_special_tokens: bool = True, **_ignored: Any) -> BatchFeature:
        """input_ids with every media token expanded, attention_mask, and the pixels with their grids:
        pixel_values_videos [sum T, 3, S, S] + video_grids [videos, 1] (frames); pixel_values [tiles, 3, S, S] +
        image_grids [images, 3] (kind 0 single / 1 dynamic / 2 s2, rows, columns)."""
        texts = [text] if isinstance(text, str) else list(text or [])
        if len(texts) != 1:
            raise ValueError("NVILAProcessor takes one prompt at a time")
        video_list = list(videos or [])
        image_list = [img for sample in (images or []) for img in (sample if isinstance(sample, (list, tuple))
                                                                    else [sample])]
        features: dict[str, Any] = {}
        side = self.tokens_per_side
        prompt = texts[0]
        image_expansions: list[list[int]] = []
        if image_list:
            pixels, grids = self.image_pixels(image_list)
            if grids[0][0] == "dynamic":  # one <image> per tile, each followed by "\n" (VILA rewrites the prompt)
                prompt = prompt.replace(IMAGE_TOKEN, (IMAGE_TOKEN + "\n") * grids[0][1], 1)
                image_expansions = [self.media_ids(self.config.image_encoder, self.image_token_id, 1, side, side)
                                    for _ in range(grids[0][1])]
            else:
                for kind, rows, cols in grids:
                    image_expansions.append(self.media_ids(self.config.image_encoder, self.image_token_id, 1,
                                                           side * rows, side * cols))
            features["pixel_values"] = torch.cat(pixels)
            kinds = {"single": 0, "dynamic": 1, "s2": 2}
            features["image_grids"] = torch.tensor([[kinds[k], r, c] for k, r, c in grids], dtype=torch.long)
        ids = list(self.tokenizer(prompt, add_special_tokens=add_special_tokens).input_ids)
        video_expansions = []
        if video_list:
            pixels = [self.video_pixels(frames) for frames in video_list]
            video_expansions = [self.media_ids(self.config.video_encoder, self.video_token_id, p.shape[0], side, side)
                                for p in pixels]
            features["pixel_values_videos"] = torch.cat(pixels)
            features["video_grids"] = torch.tensor([[p.shape[0]] for p in pixels], dtype=torch.long)
        ids = self._expand(ids, self.video_token_id, video_expansions, "video")
        ids = self._expand(ids, self.image_token_id, image_expansions, "image")
        features["input_ids"] = torch.tensor([ids], dtype=torch.long)
        features["attention_mask"] = torch.ones_like(features["input_ids"])
        return BatchFeature(features, tensor_type=return_tensors)

    @staticmethod
    def _expand(ids: list[int], token: int, expansions: list[list[int]], what: str) -> list[int]:
        """Replace the media tokens of `ids`, in order, by their expansions (as many as there are media)."""
        count = ids.count(token)
        if count != len(expansions):
            raise ValueError(f"the prompt has {count} {what} tokens but {len(expansions)} {what}s (or tiles) were given")
        if not count:
            return ids
        out: list[int] = []
        pending = iter(expansions)
        for value in ids:
            out.extend(next(pending) if value == token else (value,))
        return out


def add_vila_tokens(tokenizer: Any) -> Any:
    """The tokens VILA's loader adds to the LLM tokenizer if missing (sentinel, then the media tokens), as special."""
    for token in (SENTINEL_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN):
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens([token], special_tokens=True)
    return tokenizer


def stop_token_ids(tokenizer: Any, chat_template: str) -> list[int]:
    """EOS plus the token the chat template writes right after an assistant message (Qwen: <|im_end|>)."""
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    conversation = [{"role": "user", "content": "q"}, {"role": "assistant", "content": SENTINEL_TOKEN}]
    ids = tokenizer.apply_chat_template(conversation, chat_template=chat_template, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    sentinel = tokenizer.convert_tokens_to_ids(SENTINEL_TOKEN)
    for position, value in enumerate(ids[:-1]):
        if value == sentinel and ids[position + 1] not in stops:
            stops.append(int(ids[position + 1]))
    return stops
