"""MiniCPM-V 2.6's prompt and pixel inputs, with the interface framefusion.video.prompting uses.

As the original `chat()`: a user message's items (images, video frames, text) are joined by newlines, each image
written as "(<image>./</image>)", and the Qwen2 chat template as published (in tokenizer_config.json) renders
the messages. Each image tag then becomes its slices' placeholders: "<image>" + query_num "<unk>" + "</image>"
for the thumbnail (after "<image_id>k</image_id>" when image ids are on), then "<slice>" + "<unk>"s + "</slice>"
per grid cell, cells of a row side by side, rows separated by newlines.

Videos follow the model card's recipe: every sampled frame is an image item of the one user message, with
use_image_id=False and max_slice_nums=2 (a frame larger than 448 x 448 gets up to two slices besides its
thumbnail; a 448 x 448 frame is one slice: "<image>" + 64 "<unk>" + "</image>"), frames separated by a newline.
A prompt with a video uses those settings for its images too, as one `chat()` call with them would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerFast

from framefusion.models.minicpmv.slicing import Grid, SliceSettings, normalize, pad_slices, slice_image
from framefusion.models.processing import DecodesWithTokenizer, as_pil

IMAGE_TAG = "(<image>./</image>)"  # the original chat()'s image item
VIDEO_TAG = "(<video>./</video>)"  # ours: one per video, expanded into its frames' image items
VIDEO_MAX_SLICES = 2  # model card: max_slice_nums=2 for video
ORIGINAL_PAD_ID = 0  # the original processor's padding id, masked wherever it occurs
MARKERS = {"im_start": "<image>", "im_end": "</image>", "slice_start": "<slice>", "slice_end": "</slice>",
           "unk": "<unk>", "im_id_start": "<image_id>", "im_id_end": "</image_id>"}


@dataclass(frozen=True)
class PromptSettings:
    """What the placeholders look like and how images are sliced (preprocessor_config.json)."""

    slicing: SliceSettings = SliceSettings()
    query_num: int = 64  # image_feature_size: "<unk>" tokens per slice
    use_image_id: bool = True
    video_max_slices: int = VIDEO_MAX_SLICES
    markers: tuple[tuple[str, str], ...] = tuple(MARKERS.items())

    def marker(self, name: str) -> str:
        """The token of a marker by its preprocessor_config.json name (im_start, unk, slice_end, ...)."""
        return dict(self.markers)[name]


def read_settings(folder: Path, query_num: int, overrides: dict[str, Any] | None = None) -> PromptSettings:
    """PromptSettings from preprocessor_config.json (the original's defaults where a key is absent)."""
    path = folder / "preprocessor_config.json"
    raw = json.loads(path.read_text()) if path.is_file() else {}
    slicing = SliceSettings(scale_resolution=int(raw.get("scale_resolution", 448)),
                            patch_size=int(raw.get("patch_size", 14)),
                            max_slice_nums=int(raw.get("max_slice_nums", 9)),
                            slice_mode=bool(raw.get("slice_mode", True)),
                            mean=tuple(raw.get("norm_mean", (0.5, 0.5, 0.5))),
                            std=tuple(raw.get("norm_std", (0.5, 0.5, 0.5))))
    if int(raw.get("image_feature_size", query_num)) != query_num:
        raise ValueError(f"preprocessor_config.json's image_feature_size {raw['image_feature_size']} differs from "
                         f"config.json's query_num {query_num}")
    settings = PromptSettings(slicing=slicing, query_num=query_num, use_image_id=bool(raw.get("use_image_id", False)),
                              markers=tuple((name, raw.get(name, token)) for name, token in MARKERS.items()))
    overrides = dict(overrides or {})
    if "max_slice_nums" in overrides:
        settings = replace(settings, slicing=replace(slicing, max_slice_nums=int(overrides.pop("max_slice_nums"))))
    return replace(settings, **overrides)


class MiniCPMV26Processor(DecodesWithTokenizer):
    """Chat template, prompt expansion, slicing and pixel tensors of MiniCPM-V 2.6 (one prompt at a time)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, settings: PromptSettings):
        self.tokenizer = tokenizer
        self.settings = settings
        self.chat_template = tokenizer.chat_template

    # ---- text ---------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str:
        """The prompt text, with one image tag per image and one video tag per video (expanded by __call__)."""
        if tokenize:
            raise ValueError("MiniCPM-V 2.6's processor renders text only (tokenize=False); call it on the text")
        flat = [{"role": m["role"], "content": _flatten(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(flat, add_generation_prompt=add_generation_prompt, tokenize=False,
                                                  **kwargs)

    def image_placeholder(self, grid: Grid | None, image_id: int | None) -> str:
        """The tokens that stand for one image (or frame) sliced into `grid`."""
        m, unk = self.settings.marker, self.settings.marker("unk") * self.settings.query_num
        text = f"{m('im_id_start')}{image_id}{m('im_id_end')}" if image_id is not None else ""
        text += m("im_start") + unk + m("im_end")
        if grid is not None:
            cell = m("slice_start") + unk + m("slice_end")
            text += "\n".join(cell * grid[0] for _ in range(grid[1]))
        return text

    # ---- inputs -------------------------------------------------------------------------------------
    def __call__(self, text: str | list[str], videos: list[Any] | None = None, images: list[Any] | None = None,
                 return_tensors: str = "pt", **kwargs: Any) -> BatchFeature:
        """input_ids, attention_mask and the slices' pixels for one prompt (video_metadata, do_sample_frames and
        add_special_tokens are accepted and ignored: frames come sampled and nothing is added to the text)."""
        texts = [text] if isinstance(text, str) else list(text)
        if len(texts) != 1:
            raise ValueError(f"MiniCPM-V 2.6's processor takes one prompt at a time, got {len(texts)}")
        prompt = texts[0]
        videos = list(videos or [])
        image_list = [image for group in (images or []) for image in (group if isinstance(group, list) else [group])]
        with_video = bool(videos)
        max_slices = self.settings.video_max_slices if with_video else self.settings.slicing.max_slice_nums
        use_ids = self.settings.use_image_id and not with_video
        pieces, order = _split_tags(prompt)
        if order.count(VIDEO_TAG) != len(videos) or order.count(IMAGE_TAG) != len(image_list):
            raise ValueError(f"the prompt has {order.count(VIDEO_TAG)} video and {order.count(IMAGE_TAG)} image tags "
                             f"for {len(videos)} videos and {len(image_list)} images")
        out_text, video_slices, image_slices, slice_video, shapes = pieces[0], [], [], [], []
        video_iter, image_iter, image_index = iter(videos), iter(image_list), 0
        for tag, after in zip(order, pieces[1:]):
            if tag == VIDEO_TAG:
                frames = _frames(next(video_iter))
                placeholders, per_frame = [], set()
                for frame in frames:  # a loop over frames (each resized and sliced with PIL), not tokens
                    cells, grid = slice_image(frame, self.settings.slicing, max_slices)
                    video_slices += [normalize(cell, self.settings.slicing) for cell in cells]
                    per_frame.add(len(cells))
                    placeholders.append(self.image_placeholder(grid, None))
                if len(per_frame) != 1:
                    raise ValueError("the frames of one video were sliced differently; give them one size")
                slices_per_frame = per_frame.pop()
                slice_video += [len(shapes)] * (len(frames) * slices_per_frame)
                shapes.append((len(frames), slices_per_frame))
                out_text += "\n".join(placeholders)
            else:
                image = as_pil(next(image_iter))
                cells, grid = slice_image(image, self.settings.slicing, max_slices)
                image_slices += [normalize(cell, self.settings.slicing) for cell in cells]
                slice_video += [-1] * len(cells)
                out_text += self.image_placeholder(grid, image_index if use_ids else None)
                image_index += 1
            out_text += after
        ids = torch.tensor([self.tokenizer(out_text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
        # as the original: it pads with id 0 and masks every id 0 ("!" in Qwen2's vocabulary) out of attention
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": (ids != ORIGINAL_PAD_ID).long()}
        patch = self.settings.slicing.patch_size
        if video_slices:
            data["pixel_values_videos"], data["tgt_sizes_videos"] = pad_slices(video_slices, patch)
            data["video_shape"] = torch.tensor(shapes, dtype=torch.long)
        if image_slices:
            data["pixel_values"], data["tgt_sizes"] = pad_slices(image_slices, patch)
        if video_slices and image_slices:
            data["slice_video"] = torch.tensor(slice_video, dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)


def _flatten(content: Any) -> str:
    """A message's content as the original chat() writes it: items joined by newlines, an image as its tag."""
    if isinstance(content, str):
        return content
    items = []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            items.append(item["text"])
        elif kind == "image":
            items.append(IMAGE_TAG)
        elif kind == "video":
            items.append(VIDEO_TAG)
        else:
            raise ValueError(f"MiniCPM-V 2.6 messages hold text, image and video items, not {kind!r}")
    return "\n".join(items)


def _split_tags(prompt: str) -> tuple[list[str], list[str]]:
    """(text pieces, tags between them in order): pieces has one more entry than tags."""
    pieces, order, rest = [], [], prompt
    while True:
        found = [(rest.find(tag), tag) for tag in (IMAGE_TAG, VIDEO_TAG) if tag in rest]
        if not found:
            return pieces + [rest], order
        at, tag = min(found)
        pieces.append(rest[:at])
        order.append(tag)
        rest = rest[at + len(tag):]


def _frames(video: Any) -> list[Image.Image]:
    """[T, 3, H, W] or [T, H, W, 3] uint8 frames (tensor or array) as RGB PIL images."""
    array = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.ndim != 4:
        raise ValueError(f"a video must be [T, 3, H, W] or [T, H, W, 3] frames, got shape {array.shape}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    return [Image.fromarray(np.ascontiguousarray(frame.astype(np.uint8))) for frame in array]
