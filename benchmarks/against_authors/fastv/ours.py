"""Our side of the FastV check: a tiny LLaVA-NeXT-Video (its language model is a LLaMA, the model FastV's code
patches), our FastV prefill, and what the authors' side needs to run the same language model on the same inputs.

    python ours.py WORK_DIR        (this repository's venv)

Writes WORK_DIR/lm/ (the language model as a transformers-4.31 LlamaForCausalLM: config.json, model.safetensors),
WORK_DIR/inputs.pt (the embeddings the language model receives, [1, S, D], and the video span) and WORK_DIR/ours.json
(per run: our K, the kept video tokens, the count, the last-position logits; and the dense logits).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
LAYERS = 8
RUNS = ((0.5, 2), (0.6, 2), (0.5, 1), (0.7, 3))  # (budget, our layer K)


def main() -> None:
    work = Path(sys.argv[1])
    (work / "lm").mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from safetensors.torch import save_file

    from framefusion import last_stats, remove_framefusion
    from framefusion.methods import apply_method
    from framefusion.tiny import build_tiny_model
    from framefusion.video import VideoClip
    from framefusion.video.prompting import prepare_inputs

    model, processor = build_tiny_model("llava_next_video", num_layers=LAYERS, seed=0)
    text = model.config.text_config
    state = {("model." + k[len("model.language_model."):] if k.startswith("model.language_model.") else k): v
             for k, v in model.state_dict().items() if k.startswith(("model.language_model.", "lm_head."))}
    save_file({k: v.contiguous() for k, v in state.items()}, str(work / "lm" / "model.safetensors"),
              metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": text.vocab_size,
              "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
              "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
              "num_key_value_heads": text.num_key_value_heads, "hidden_act": text.hidden_act,
              "rms_norm_eps": text.rms_norm_eps, "max_position_embeddings": text.max_position_embeddings,
              "tie_word_embeddings": False, "torch_dtype": "float32"}
    assert text.rope_parameters["rope_theta"] == 10000.0  # 4.31 hard-codes it
    (work / "lm" / "config.json").write_text(json.dumps(config, indent=1))

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8)
    frames[:, :32] = frames[0, :32]  # a static top half
    clip = VideoClip(frames=frames, timestamps=np.arange(8) / 4.0, fps=4.0, duration=2.0)
    inputs = prepare_inputs(processor, [clip], "What colour is the square?")
    captured = {}

    def capture(_module, args, kwargs):
        captured.setdefault("embeds", kwargs["inputs_embeds"].detach().clone())

    hook = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.inference_mode():
        dense = model(**inputs).logits[0, -1].float()
    hook.remove()
    video = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
    torch.save({"embeds": captured["embeds"], "video_start": int(video[0]), "video_tokens": int(video.numel())},
               work / "inputs.pt")
    runs = []
    for budget, layer in RUNS:
        apply_method(model, "fastv", budget, layer=layer)
        with torch.inference_mode():
            logits = model(**inputs).logits[0, -1].float()
        stats = last_stats(model)
        remove_framefusion(model)
        kept = torch.nonzero(stats.removed_at < 0).flatten().tolist()
        runs.append({"budget": budget, "layer": layer, "kept": kept, "kept_count": len(kept),
                     "kept_ratio": stats.kept_ratio, "logits": logits.tolist()})
        print(f"ours: fastv budget={budget} layer={layer}: kept {len(kept)}/{video.numel()}")
    (work / "ours.json").write_text(json.dumps({"dense": dense.tolist(), "runs": runs}))


if __name__ == "__main__":
    main()
