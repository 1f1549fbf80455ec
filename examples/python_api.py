"""FrameFusion from Python on a tiny random Qwen2-VL built locally (runs offline, on the CPU, in seconds).

    python examples/python_api.py

With a real checkpoint, replace `build_tiny_model(...)` by
`Qwen2VLForConditionalGeneration.from_pretrained("Qwen/Qwen2-VL-7B-Instruct", torch_dtype="auto", device_map="auto")`
and `AutoProcessor.from_pretrained(...)`; nothing else changes.
"""

import numpy as np
import torch

import framefusion
from framefusion.tiny import build_tiny_model
from framefusion.video import VideoClip
from framefusion.video.prompting import prepare_inputs

model, processor = build_tiny_model("qwen2_vl", num_layers=8)

# 16 frames whose top half never changes: FrameFusion merges those patches into the first frame's.
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
frames[:, :32] = frames[0, :32]
clip = VideoClip(frames=frames, timestamps=np.arange(16) / 4.0, fps=4.0, duration=4.0)
inputs = prepare_inputs(processor, [clip], "What happens in the video?")

# `reduced` installs a method for the block and always gives the stock model back (an exception or Ctrl-C too).
# "dense" is the published model (Qwen2-VL: the original M-RoPE positions for the text after a video).
with torch.no_grad():
    with framefusion.reduced(model, "dense"):
        dense = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    with framefusion.reduced(model, "framefusion", budget=0.3, ratio_lower_bound=0.1) as run:
        reduced = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        stats = run.stats
# The same without a block: framefusion.apply_framefusion(model, cost=0.3) ... framefusion.remove_framefusion(model).

print(f"vision tokens: {stats.num_vision_tokens}, achieved budget (kept_ratio): {stats.kept_ratio:.3f}")
print(f"similarity threshold: {stats.similarity_threshold} ({stats.threshold_source})")
print("vision tokens in each layer's KV cache:", stats.vision_tokens_per_layer())
for step in stats.steps:
    print(f"  point {step.point}: {step.kind} removed {step.removed} of {step.vision_before}")
print("dense answer ids:      ", dense[0, inputs["input_ids"].shape[1]:].tolist())
print("FrameFusion answer ids:", reduced[0, inputs["input_ids"].shape[1]:].tolist())
