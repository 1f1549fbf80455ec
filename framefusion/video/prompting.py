"""Turn sampled video frames (and optional images) plus a question into model inputs via the processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.video_utils import VideoMetadata

from framefusion.video import VideoClip


def prepare_inputs(
    processor: Any,
    videos: list[VideoClip],
    question: str,
    *,
    images: list[Any] | None = None,
    system: str | None = None,
    history: Sequence[tuple[str, str]] = (),
) -> BatchFeature:
    """Render the chat template for videos + images + question and return `model.generate`-ready tensors.

    history: earlier (question, answer) turns about the same videos; the videos go with the first question.
    """
    # The frames are already sampled: the processor must not sample again (do_sample_frames=False) and
    # gets each clip's VideoMetadata (source fps, frame indices, total frames), which Qwen3-VL turns into
    # "<t seconds>" timestamps and Qwen2.5-VL into temporal M-RoPE spacing (second_per_grid_ts).
    videos = list(videos or [])
    images = list(images or [])

    turns = [*history, (question, None)]
    content = [{"type": "video"} for _ in videos] + [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": turns[0][0]})
    messages = [{"role": "user", "content": content}]
    for (_, answer), (next_question, _) in zip(turns[:-1], turns[1:]):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": next_question}]})
    if system is not None:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    bos = getattr(processor.tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):  # the template already wrote BOS: don't add a second one
        kwargs["add_special_tokens"] = False
    if videos:
        kwargs["videos"] = [_frames_tensor(clip) for clip in videos]
        kwargs["video_metadata"] = [video_metadata(clip) for clip in videos]
        kwargs["do_sample_frames"] = False
    if images:
        kwargs["images"] = [images]  # one sample holding all images (multi-image layout for LLaVA-OV)
    try:
        return processor(**kwargs)
    except (ValueError, RuntimeError) as err:
        if len({clip.num_frames for clip in videos}) > 1:  # LLaVA-OV, LLaVA-NeXT-Video, InternVL stack clips as [N, T, C, H, W]
            raise ValueError(
                f"{type(processor).__name__} could not take videos with different frame counts "
                f"({', '.join(str(clip.num_frames) for clip in videos)}) in one prompt: it stacks them into "
                "one [N, T, C, H, W] tensor. Sample every video with the same number of frames."
            ) from err
        raise


def video_metadata(clip: VideoClip) -> VideoMetadata:
    """Describe a sampled clip the way transformers' video processors expect (frame indices at source fps)."""
    num_frames, height, width = clip.frames.shape[:3]
    fps = float(clip.fps) if clip.fps and clip.fps > 0 else None
    if fps is None:  # no source rate known: call the sampled frames consecutive frames of a 1 fps video
        fps, indices = 1.0, list(range(num_frames))
    else:
        indices = [int(i) for i in np.round(np.asarray(clip.timestamps, dtype=np.float64) * fps)]
    total = max(int(round(clip.duration * fps)), (indices[-1] + 1) if indices else 0, num_frames)
    return VideoMetadata(
        total_num_frames=total,
        fps=fps,
        width=int(width),
        height=int(height),
        duration=float(clip.duration) if clip.duration and clip.duration > 0 else total / fps,
        frames_indices=indices,
    )


def _frames_tensor(clip: VideoClip) -> torch.Tensor:
    """[T, H, W, 3] uint8 frames -> [T, 3, H, W], the unambiguous channels-first layout of video processors."""
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"VideoClip.frames must be [T, H, W, 3]; got shape {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()

