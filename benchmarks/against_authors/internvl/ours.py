"""Our side: tiny InternVL2.5 checkpoints in the original format, the test video, and our runs through `ask`.

Run with this repository's venv (transformers 5.x):  python ours.py WORK_DIR
Writes WORK_DIR/{internlm2-28, qwen2-4}/ (checkpoints, if missing), WORK_DIR/frames.npy (the frames `ask --frames 8`
samples from needle.mp4), WORK_DIR/ours.json and WORK_DIR/ours.pt (logits).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from framefusion.pipeline import ask  # noqa: E402
from framefusion.pipeline.answer import model_inputs  # noqa: E402
from framefusion.pipeline.loading import load_model  # noqa: E402
from framefusion.tiny.internvl_chat import save_internvl_chat_checkpoint  # noqa: E402
from framefusion.video import Sampling  # noqa: E402

VIDEO = HERE / "needle.mp4"  # framefusion.synthetic.make_sample("color", seed=3) at 8 fps (write_video)
QUESTION = "What color is the square?"
FRAMES = 8
NEW_TOKENS = 12
CHECKPOINTS = {  # name: builder arguments (framefusion.tiny.internvl_chat.save_internvl_chat_checkpoint)
    "internlm2-28": dict(llm="internlm2", num_layers=28),  # 28 layers: the authors' budget hard-codes 28
    "qwen2-4": dict(llm="qwen2", num_layers=4, qk_normalization=True),  # InternViT-6B style: q/k norm, RMS norm
}
TOKENIZER_TEXTS = (  # tokenizer equivalence: ids of these strings from ours and from the original tokenizer
    "What color is the square?", "  two  leading spaces and   runs of   spaces ", "line one\nline two\n\n",
    "你是书生·万象，英文名是InternVL", "emoji 🙂 and accents: café, naïve, Ærø", "tabs\tand\rcarriage returns",
    "<|im_start|>user\nFrame1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\n<|im_end|>", "</s> <s> <unk> mixed specials",
    "numbers 1234567890 and symbols #$%&*()[]{}", "Frame12: Image-3: Video-1:", "",
)
REGIMES = {  # name: (cost, similarity_lower_bound, ratio_lower_bound); FrameFusion on the InternLM2 checkpoint
    "a_oneshot": (0.3, 0.6, 0.1),  # one merge step at layer 0, capped: merging and pruning end
    "b_merge_merge_prune": (0.3, 0.999, 0.1),  # merges at points 0 and 1, ratio < 0.1: prune at point 2
    "c_prune_only": (0.3, 1.1, 0.1),  # nothing reaches similarity 1.1: prune at point 1
    "d_budget_0.5": (0.5, 0.6, 0.1),
}


def ensure_video() -> Path:
    """needle.mp4 (kept in this folder; rebuilt from the synthetic clip if missing)."""
    if not VIDEO.is_file():
        from framefusion.synthetic import make_sample
        from framefusion.video import write_video

        write_video(str(VIDEO), make_sample("color", seed=3).frames, fps=8)
    return VIDEO


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(loaded, clip, method: str, cost: float = 0.3, sim: float = 0.6, ratio: float = 0.1) -> dict:
    """One `ask` (what `framefusion ask --json` runs), with the first token's logits."""
    params = {"similarity_lower_bound": sim, "ratio_lower_bound": ratio}
    result = ask(loaded, [clip], QUESTION, method=method, budget=cost, params=params, max_new_tokens=NEW_TOKENS)
    record = {k: v for k, v in result.to_json().items() if k not in ("timings", "peak_memory_bytes")}
    record["steps"] = [s.__dict__ for s in result.stats.steps] if result.stats is not None else []
    return record, result.first_token_logits


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    clip = Sampling(num_frames=FRAMES).load(ensure_video())
    np.save(work / "frames.npy", np.asarray(clip.frames))
    out = {"tokenizer_texts": TOKENIZER_TEXTS, "question": QUESTION, "frames": FRAMES, "max_new_tokens": NEW_TOKENS,
           "video_sha256": sha256(VIDEO), "checkpoints": {}}
    logits = {}
    for name, kwargs in CHECKPOINTS.items():
        folder = work / name
        if not (folder / "model.safetensors").is_file():
            save_internvl_chat_checkpoint(folder, **kwargs)
        loaded = load_model(str(folder), device="cpu", dtype="fp32")
        inputs = model_inputs(loaded, [clip], QUESTION)
        with torch.no_grad():
            dense_all = loaded.model(**inputs).logits[0]  # [N, vocab], every prompt position
        tokenizer = loaded.processor.tokenizer
        encoded = [tokenizer(text)["input_ids"] for text in TOKENIZER_TEXTS]
        entry = {"tokenizer_ids": encoded, "tokenizer_decoded": [tokenizer.decode(ids, skip_special_tokens=True)
                                                                 for ids in encoded],
                 "builder": kwargs, "weights_sha256": sha256(folder / "model.safetensors"),
                 "input_ids": inputs["input_ids"][0].tolist(),
                 "tokens_per_frame": int(loaded.model.config.image_seq_length),
                 "runs": {}}
        torch.save({"pixel_values_videos": inputs["pixel_values_videos"]}, work / f"{name}_pixels.pt")
        logits[f"{name}|dense_all"] = dense_all
        entry["runs"]["dense"], logits[f"{name}|dense"] = run(loaded, clip, "dense")
        if name.startswith("internlm2"):
            for regime, (cost, sim, ratio) in REGIMES.items():
                entry["runs"][regime], logits[f"{name}|{regime}"] = run(loaded, clip, "framefusion", cost, sim, ratio)
                entry["runs"][regime]["regime"] = {"cost": cost, "similarity_lower_bound": sim,
                                                   "ratio_lower_bound": ratio}
        out["checkpoints"][name] = entry
        print(f"ours: {name}: " + ", ".join(f"{k} {v['answer_ids'][:4]}..." for k, v in entry["runs"].items()),
              flush=True)
    (work / "ours.json").write_text(json.dumps(out, indent=1))
    torch.save(logits, work / "ours.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
