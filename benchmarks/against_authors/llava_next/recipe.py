"""What the LLaVA-NeXT harness runs, in one place (our venv only: it imports framefusion.tiny and framefusion.video).

- the tiny checkpoint: framefusion.tiny.llava_next.write_tiny_llava_video with CHECKPOINT (28 decoder layers, as
  the authors' budget formula assumes; SigLIP at 384 px with 14-px patches, so a frame is the real 27 x 27 grid and
  14 x (14 + 1) = 210 LLM tokens); its tower repository goes into a hub cache folder with weights, because
  LLaVA-NeXT's code loads the tower from there before the checkpoint's weights;
- the clip: CLIP_FRAMES frames written losslessly (FFV1, RGB), so any decoder returns exactly these pixels;
- the question, frame count and generation length, and the FrameFusion regimes (REGIMES).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CHECKPOINT = dict(num_layers=28, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128,
                  vision_layers=1, vision_hidden=64, vision_heads=16, vision_intermediate=128, image_size=384,
                  patch_size=14, vision_tower="framefusion-tiny/siglip-tiny-patch14-384", seed=0,
                  initializer_range=0.2)  # wider random weights than 0.02: greedy answers that are not one token
QUESTION = "What is happening in this video?"
FRAMES = 8
MAX_NEW_TOKENS = 8
CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH, CLIP_FPS = 8, 96, 128, 4
# name: (cost, similarity_lower_bound, ratio_lower_bound); which steps run is printed by compare.py
REGIMES = {
    "merge_then_prune": (0.3, 0.6, 0.6),
    "cascade_then_prune": (0.3, 0.9, 0.02),
    "prune_only": (0.3, 1.01, 0.1),
    "merge_then_capped": (0.3, 0.6, 0.1),
    "oneshot_capped": (0.7, 0.6, 0.1),
    "budget_0.5": (0.5, 0.6, 0.1),
}


def clip_frames() -> np.ndarray:
    """[T, H, W, 3] uint8: a still blocky background below, noise that changes every frame above (the top half),
    and a red square moving across the still part (so some patches repeat exactly and others do not)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(CLIP_HEIGHT // 8, CLIP_WIDTH // 8, 3), dtype=np.uint8)
    background = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)
    frames = np.repeat(background[None], CLIP_FRAMES, axis=0).copy()
    for t in range(CLIP_FRAMES):
        frames[t, :CLIP_HEIGHT // 2] = rng.integers(0, 256, size=(CLIP_HEIGHT // 2, CLIP_WIDTH, 3), dtype=np.uint8)
        x = 8 + 12 * t
        frames[t, 60:84, x:x + 24] = (255, 40, 40)
    return frames


IMAGE_QUESTION = "Describe the image."
IMAGE_SIZES = ((900, 500), (1600, 1200))  # (width, height): 3 x 2 tiles; 6 x 5 tiles, scaled down by anyres_max_9


def image_arrays() -> list[np.ndarray]:
    """[H, W, 3] uint8 images, smooth enough to look like something, of IMAGE_SIZES."""
    rng = np.random.default_rng(1)
    images = []
    for width, height in IMAGE_SIZES:
        coarse = rng.integers(0, 256, size=(height // 50 + 1, width // 50 + 1, 3), dtype=np.uint8)
        images.append(np.repeat(np.repeat(coarse, 50, axis=0), 50, axis=1)[:height, :width].copy())
    return images


def write_clip(path: str | Path) -> Path:
    """The clip as a lossless FFV1 (bgr0) .mkv at CLIP_FPS."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = clip_frames()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = CLIP_WIDTH, CLIP_HEIGHT, "bgr0"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_checkpoint(folder: str | Path, tower_cache: str | Path | None = None) -> Path:
    """The tiny checkpoint (and, with `tower_cache`, its tower repository with weights in that hub cache)."""
    from framefusion.tiny.llava_next import write_tiny_llava_video

    return write_tiny_llava_video(folder, tower_cache=tower_cache, tower_weights=tower_cache is not None,
                                  **CHECKPOINT)


def weights_digest(folder: str | Path) -> str:
    """sha256 of the checkpoint's model.safetensors (the expectations hold for exactly these weights)."""
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()
