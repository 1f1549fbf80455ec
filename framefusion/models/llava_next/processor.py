"""The input pipeline of LLaVA-NeXT as lmms-eval's llava_vid / llava_onevision drive it, behind the processor
interface framefusion.video.prompting uses.

- Pixels: SigLIP's preprocessing as LLaVA-NeXT's SigLipImageProcessor does it: PIL bicubic resize of the uint8 frame
  to the tower's square size (384), times 1/255 in float64 then float32, (x - 0.5) / 0.5. Images are tiled as
  image_aspect_ratio says (anyres / anyres_max_N over image_grid_pinpoints, pad, or a plain resize).
- Prompt: the ChatML conversation `qwen_1_5` (system "You are a helpful assistant."), the user message
  `<image>\n` + question (one `<image>` per video, then `<image>` per image separated by spaces, as llava_onevision
  writes several), optionally llava_vid's time instruction before the question.
- Tokens: every text piece between placeholders is tokenized on its own (as tokenizer_image_token does), and each
  placeholder becomes as many placeholder tokens as the video or image gives LLM tokens (newline tokens included).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from framefusion.models.llava_next.features import best_resolution, image_tokens, pinpoints, video_tokens
from framefusion.models.llava_next.settings import CONVERSATIONS, MultimodalSettings
from framefusion.models.processing import DecodesWithTokenizer, as_pil

VIDEO, IMAGE = "<video>", "<image>"  # placeholders of the rendered prompt (the original writes <image> for both)
SEPARATOR = "<|im_end|>"
MEAN = STD = 0.5  # SigLIP's normalisation


def normalize(frame: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, size, size] float32, as SigLipImageProcessor.preprocess."""
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    resized = np.asarray(image.resize((size, size), resample=Image.Resampling.BICUBIC))
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    return ((scaled - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)


class LlavaQwenProcessor(DecodesWithTokenizer):
    """Chat template, pixel preprocessing and placeholder expansion of a LlavaQwen checkpoint."""

    def __init__(self, tokenizer: Any, settings: MultimodalSettings, image_size: int, patch_size: int,
                 video_token_id: int, image_token_id: int):
        self.tokenizer = tokenizer
        self.settings = settings
        self.image_size = image_size
        self.side = image_size // patch_size
        self.video_token_id = video_token_id
        self.image_token_id = image_token_id

    # ---- prompt ------------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                            tokenize: bool = False, **_: Any) -> str:
        """The conversation prompt (text); visual content is written as placeholders before the message's text."""
        system = CONVERSATIONS[self.settings.conv_template]
        turns: list[tuple[str, str]] = []
        for message in messages:
            if message["role"] == "system":
                system = _text(message["content"])
                continue
            turns.append((message["role"], self._message(message["content"])))
        prompt = f"<|im_start|>system\n{system}{SEPARATOR}\n" if system else ""
        for role, text in turns:
            prompt += f"<|im_start|>{role}\n{text}{SEPARATOR}\n"
        if add_generation_prompt:
            prompt += "<|im_start|>assistant\n"
        if tokenize:
            return self.tokenizer(prompt)["input_ids"]
        return prompt

    @staticmethod
    def _message(content: Any) -> str:
        if isinstance(content, str):
            return content
        videos = sum(item.get("type") == "video" for item in content)
        images = sum(item.get("type") == "image" for item in content)
        marks = VIDEO * videos + (" " if videos and images else "") + " ".join([IMAGE] * images)
        text = _text(content)
        return f"{marks}\n{text}" if marks else text

    # ---- inputs ------------------------------------------------------------------------------------------------
    def __call__(self, text: str | Sequence[str], videos: Sequence[Any] | None = None,
                 video_metadata: Sequence[Any] | None = None, images: Sequence[Any] | None = None,
                 return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        """input_ids (placeholders expanded), attention_mask, pixel_values_videos [V, T, 3, S, S], and for images
        pixel_values [tiles, 3, S, S], image_sizes [I, 2] (width, height), image_tiles [I]."""
        prompts = [text] if isinstance(text, str) else list(text)
        if len(prompts) != 1:
            raise ValueError("the LlavaQwen processor takes one prompt at a time")
        prompt = prompts[0]
        frames = [self._frames(video) for video in videos or []]
        if frames and self.settings.max_frames_num is not None:
            frames, video_metadata = self._cap(frames, video_metadata)
        if frames and self.settings.add_time_instruction:
            prompt = self._with_time_instruction(prompt, frames, video_metadata)
        flat_images = [image for group in images or [] for image in (group if isinstance(group, (list, tuple))
                                                                         else [group])]
        data: dict[str, Any] = {}
        counts: list[int] = []
        if frames:
            if len({f.shape[0] for f in frames}) > 1:
                raise ValueError("videos with different frame counts cannot be stacked into one [V, T, C, H, W] "
                                 "tensor")
            data["pixel_values_videos"] = torch.from_numpy(np.stack(
                [np.stack([normalize(frame, self.image_size) for frame in clip]) for clip in frames]))
            counts += [video_tokens(len(clip), self.side, self.settings).total for clip in frames]
        if flat_images:
            tiles, sizes = zip(*(self._image(image) for image in flat_images))
            data["pixel_values"] = torch.from_numpy(np.concatenate(tiles))
            data["image_sizes"] = torch.tensor(sizes, dtype=torch.long)
            data["image_tiles"] = torch.tensor([t.shape[0] for t in tiles], dtype=torch.long)
            counts += [image_tokens(size, t.shape[0], self.side, self.image_size, self.settings).total
                       for t, size in zip(tiles, sizes)]
        ids = self._tokenize(prompt, len(frames), len(flat_images), counts)
        limit = self.settings.tokenizer_model_max_length
        if limit is not None and len(ids) > limit:
            raise ValueError(f"the prompt is {len(ids)} tokens, more than the checkpoint's "
                             f"tokenizer_model_max_length {limit} (LLaVA-NeXT would cut it there); use fewer frames")
        data["input_ids"] = torch.tensor([ids], dtype=torch.long)
        data["attention_mask"] = torch.ones_like(data["input_ids"])
        return BatchFeature(data, tensor_type=return_tensors)

    def _tokenize(self, prompt: str, videos: int, images: int, counts: list[int]) -> list[int]:
        pieces = re.split(f"({re.escape(VIDEO)}|{re.escape(IMAGE)})", prompt)
        marks = [p for p in pieces if p in (VIDEO, IMAGE)]
        if marks.count(VIDEO) != videos or marks.count(IMAGE) != images:
            raise ValueError(f"the prompt has {marks.count(VIDEO)} video and {marks.count(IMAGE)} image "
                             f"placeholders for {videos} videos and {images} images")
        video_counts, image_counts = iter(counts[:videos]), iter(counts[videos:])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if piece == VIDEO:
                ids += [self.video_token_id] * next(video_counts)
            elif piece == IMAGE:
                ids += [self.image_token_id] * next(image_counts)
            else:
                chunk = self.tokenizer(piece)["input_ids"]
                if index > 0 and bos is not None and chunk[:1] == [bos]:
                    chunk = chunk[1:]  # tokenizer_image_token keeps the first chunk's BOS only
                ids += chunk
        return ids

    @staticmethod
    def _frames(video: Any) -> np.ndarray:
        """A video as [T, H, W, 3] uint8 (given [T, 3, H, W] like prompting passes, or [T, H, W, 3])."""
        array = video.numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        if array.ndim != 4:
            raise ValueError(f"a video must be [T, 3, H, W] or [T, H, W, 3]; got shape {array.shape}")
        if array.shape[1] == 3 and array.shape[-1] != 3:
            array = array.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(array.astype(np.uint8))

    def _cap(self, frames: list[np.ndarray], metadata: Sequence[Any] | None) -> tuple[list[np.ndarray], list]:
        """At most max_frames_num frames per video, picked by np.linspace as llava_vid does."""
        limit = self.settings.max_frames_num
        capped, kept_metadata = [], []
        for index, clip in enumerate(frames):
            meta = metadata[index] if metadata else None
            if len(clip) > limit:
                picks = np.linspace(0, len(clip) - 1, limit, dtype=int)
                clip = clip[picks]
                if meta is not None and getattr(meta, "frames_indices", None) is not None:
                    meta = _with_indices(meta, [meta.frames_indices[i] for i in picks])
            capped.append(clip)
            kept_metadata.append(meta)
        return capped, kept_metadata

    def _with_time_instruction(self, prompt: str, frames: list[np.ndarray], metadata: Sequence[Any] | None) -> str:
        """llava_vid's time instruction, one per video, between the placeholders' line and the question."""
        lines = []
        for index, clip in enumerate(frames):
            meta = metadata[index] if metadata else None
            fps = float(getattr(meta, "fps", None) or 1.0)
            indices = list(getattr(meta, "frames_indices", None) or range(len(clip)))
            total = getattr(meta, "total_num_frames", None) or (indices[-1] + 1 if indices else len(clip))
            times = ",".join(f"{i / fps:.2f}s" for i in indices)
            lines.append(f"The video lasts for {total / fps:.2f} seconds, and {len(clip)} frames are uniformly "
                         f"sampled from it. These frames are located at {times}.Please answer the following "
                         "questions related to this video.")
        marks = re.search(f"(?:{re.escape(VIDEO)})+[^\n]*\n", prompt)
        if marks is None:
            return prompt
        return prompt[:marks.end()] + "\n".join(lines) + "\n" + prompt[marks.end():]

    def _image(self, image: Any) -> tuple[np.ndarray, tuple[int, int]]:
        """([tiles, 3, S, S] float32, (width, height)) of one image, tiled as image_aspect_ratio says."""
        picture = as_pil(image)
        size, settings = picture.size, self.settings
        tile = self.image_size
        if settings.anyres:
            target = best_resolution(size, pinpoints(settings, tile))
            padded = _resize_and_pad(picture, target)
            crops = [padded.crop((x, y, x + tile, y + tile)) for y in range(0, target[1], tile)
                     for x in range(0, target[0], tile)]
            views = [picture.resize((tile, tile))] + crops
        elif settings.image_aspect_ratio == "pad":
            views = [_square(picture, tuple(int(v * 255) for v in (MEAN, MEAN, MEAN)))]
        else:
            views = [picture]
        return np.stack([normalize(np.asarray(view), tile) for view in views]), size


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(item.get("text", "") for item in content if item.get("type") == "text")


def _with_indices(meta: Any, indices: list[int]) -> Any:
    meta = copy.copy(meta)
    meta.frames_indices = indices
    return meta


def _resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Fit `image` into `target` (width, height) keeping its aspect, centred on black (LLaVA-NeXT's anyres)."""
    width, height = image.size
    target_w, target_h = target
    if target_w / width < target_h / height:
        new_w, new_h = target_w, min(math.ceil(height * (target_w / width)), target_h)
    else:
        new_w, new_h = min(math.ceil(width * (target_h / height)), target_w), target_h
    canvas = Image.new("RGB", target, (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h)), ((target_w - new_w) // 2, (target_h - new_h) // 2))
    return canvas


def _square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """`image` centred on a square canvas of its longer side (expand2square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
