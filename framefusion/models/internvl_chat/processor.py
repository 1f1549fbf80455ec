"""InternVL2 / 2.5's input pipeline as the published chat code builds it: conversation template, dynamic tiling,
ImageNet normalisation, `<img><IMG_CONTEXT>*P</img>` blocks, and its video prompt.

- A video frame is one tile: resized to image_size x image_size (PIL bicubic), no thumbnail (the original tiles
  frames with max_num=1), and the prompt reads "Frame1: <image>\\nFrame2: <image>\\n...FrameT: <image>\\n" + text.
- An image is tiled as the original's dynamic_preprocess: the (cols, rows) grid with min_num <= cols * rows <= max_num
  whose aspect ratio is closest to the image's (a tie goes to the larger grid when the image has more than half its
  pixels), the image resized to it and cut into tiles, plus a thumbnail of the whole image when there is more than
  one tile. One image reads "<image>\\n" + text; several read "Image-1: <image>\\nImage-2: <image>\\n" + text.
- Each tile: PIL bicubic resize, /255, minus the ImageNet mean, over the ImageNet std (the original build_transform).
Every `<image>` becomes "<img>" + "<IMG_CONTEXT>" * (image_seq_length * tiles) + "</img>".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from framefusion.models.internvl_chat.conversation import Template
from framefusion.models.processing import DecodesWithTokenizer, as_pil
from framefusion.models.tiling import closest_grid, tile_grids

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
VIDEO, IMAGE = "<video>", "<image>"  # placeholders in a rendered prompt, expanded by the processor
_PLACEHOLDER = re.compile(f"({re.escape(VIDEO)}|{re.escape(IMAGE)})")


def tile_image(image: Image.Image, tile: int, min_num: int = 1, max_num: int = 12,
               thumbnail: bool = True) -> list[Image.Image]:
    """The image's tiles (row-major), plus a whole-image thumbnail when there is more than one."""
    width, height = image.size
    cols, rows = closest_grid(width, height, tile_grids(min_num, max_num), tile)
    resized = image.resize((tile * cols, tile * rows), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows)
             for c in range(cols)]
    if thumbnail and len(tiles) != 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles


def normalize_tile(tile: Image.Image, size: int) -> torch.Tensor:
    """A tile as [3, size, size] float32: bicubic resize (none when already that size), /255, ImageNet mean/std."""
    if tile.size != (size, size):
        tile = tile.resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.array(tile.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return pixels.sub(mean).div(std)


def _flatten(items: Any) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, (list, tuple)):
        return [leaf for item in items for leaf in _flatten(item)]
    return [items]


class InternVLChatProcessor(DecodesWithTokenizer):
    """Chat template + tiling + tokenizer of an InternVL2 / 2.5 checkpoint (the interface video.prompting uses)."""

    def __init__(self, tokenizer: Any, template: Template, *, image_size: int = 448, tokens_per_tile: int = 256,
                 system_message: str | None = None, dynamic_image_size: bool = True, min_dynamic_patch: int = 1,
                 max_dynamic_patch: int = 12, use_thumbnail: bool = True):
        self.tokenizer = tokenizer
        self.template = template
        self.system_message = system_message
        self.image_size = image_size
        self.tokens_per_tile = tokens_per_tile
        self.dynamic_image_size = dynamic_image_size
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail

    # ---- prompt text ---------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str:
        """The conversation-template prompt with a `<video>` / `<image>` placeholder per video / image."""
        if tokenize:
            raise ValueError("InternVLChatProcessor.apply_chat_template renders text only (tokenize=False)")
        system, turns = self.system_message, []
        for message in messages:
            text = self.render_content(message.get("content", ""))
            if message["role"] == "system":
                system = text
            else:
                turns.append((0 if message["role"] == "user" else 1, text))
        if add_generation_prompt:
            turns.append((1, None))
        return self.template.render(turns, system)

    @staticmethod
    def render_content(content: str | list[dict[str, Any]]) -> str:
        """A message's text: videos as `<video>`, images as "<image>\\n" (numbered "Image-k: " when several)."""
        if isinstance(content, str):
            return content
        images = sum(block.get("type") == "image" for block in content)
        videos = sum(block.get("type") == "video" for block in content)
        out, image_index, video_index = "", 0, 0
        for block in content:
            kind = block.get("type")
            if kind == "video":
                video_index += 1
                out += (f"Video-{video_index}:\n" if videos > 1 else "") + VIDEO
            elif kind == "image":
                image_index += 1
                out += (f"Image-{image_index}: " if images > 1 else "") + IMAGE + "\n"
            elif kind == "text":
                out += block.get("text", "")
        return out

    # ---- pixels and tokens ---------------------------------------------------------------------------------------
    def image_tiles(self, image: Any) -> torch.Tensor:
        """[tiles, 3, S, S] of one image (dynamic tiling when the checkpoint uses it)."""
        pil = as_pil(image)
        if self.dynamic_image_size:
            tiles = tile_image(pil, self.image_size, self.min_dynamic_patch, self.max_dynamic_patch,
                               self.use_thumbnail)
        else:
            tiles = [pil]
        return torch.stack([normalize_tile(tile, self.image_size) for tile in tiles])

    def frame_tiles(self, video: Any) -> torch.Tensor:
        """[T, 3, S, S] of one video ([T, 3, H, W] or [T, H, W, 3] uint8): one tile per frame."""
        frames = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        return torch.stack([normalize_tile(tile_image(as_pil(frame), self.image_size, 1, 1, False)[0],
                                           self.image_size) for frame in frames])

    def block(self, tiles: int) -> str:
        """The `<img>...</img>` text of one image of `tiles` tiles."""
        return IMG_START + IMG_CONTEXT * (self.tokens_per_tile * tiles) + IMG_END

    def __call__(self, text: str | list[str] | None = None, images: Any = None, videos: Any = None,
                 return_tensors: str | None = "pt", add_special_tokens: bool = True, padding: bool | str = False,
                 **kwargs: Any) -> BatchFeature:
        """Tokenized prompts with every placeholder expanded, the pixels and the block table (vision_blocks)."""
        texts = [text] if isinstance(text, str) else list(text or [])
        image_list, video_list = _flatten(images), list(videos or [])
        image_pixels, video_pixels, blocks, expanded = [], [], [], []
        next_image, next_video = 0, 0
        for prompt in texts:
            pieces = []
            for part in _PLACEHOLDER.split(prompt):
                if part == VIDEO:
                    if next_video >= len(video_list):
                        raise ValueError(f"the prompt has more {VIDEO} placeholders than the {len(video_list)} videos")
                    frames = self.frame_tiles(video_list[next_video])
                    video_pixels.append(frames)
                    pieces += [f"Frame{t + 1}: {self.block(1)}\n" for t in range(frames.shape[0])]
                    blocks += [[next_video, 1]] * frames.shape[0]
                    next_video += 1
                elif part == IMAGE:
                    if next_image >= len(image_list):
                        raise ValueError(f"the prompt has more {IMAGE} placeholders than the {len(image_list)} images")
                    tiles = self.image_tiles(image_list[next_image])
                    image_pixels.append(tiles)
                    pieces.append(self.block(tiles.shape[0]))
                    blocks.append([-1, tiles.shape[0]])
                    next_image += 1
                else:
                    pieces.append(part)
            expanded.append("".join(pieces))
        if next_video != len(video_list) or next_image != len(image_list):
            raise ValueError(f"{len(video_list)} videos and {len(image_list)} images given, but the prompt places "
                             f"{next_video} and {next_image}")
        data = dict(self.tokenizer(expanded, add_special_tokens=add_special_tokens, padding=padding,
                                   return_tensors=return_tensors))
        if image_pixels:
            data["pixel_values"] = torch.cat(image_pixels)
        if video_pixels:
            data["pixel_values_videos"] = torch.cat(video_pixels)
        if blocks:
            data["vision_blocks"] = torch.tensor(blocks, dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)
