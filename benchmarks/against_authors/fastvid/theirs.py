"""FastVID's own Qwen2.5-VL code (LunarShen/FastVID @a40a109, fastvid_qwen25vl/lmms-eval/lmms_eval/models/qwenvlutils/
modeling_qwen2_5_vl.py, transformers 4.51.3) on the inputs ours.py saved, in the oracle venv.

    python theirs.py WORK_DIR BUDGET [BUDGET ...]      (AUTHORS_FASTVID: the checkout, default below)

Their model class runs unmodified; what the harness supplies, because it cannot run otherwise on a CPU (README.md):
plain-torch stand-ins for flash-attn's `flash_attn_varlen_func` and `apply_rotary_emb` (their saliency is computed
only inside their FlashAttention2 vision class, which the vision blocks are switched to after an sdpa load), and
their density noise `torch.rand(...) * 1e-6` at zero. Their hyper-parameters are their Qwen2.5-VL script's
(scripts/eval.sh: c 8, tau 0.84, ignore 0.95, d 0.4, p 4, beta 0.6), set with their own `set_my_kwargs`.
Writes WORK_DIR/theirs.json.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CHECKOUT = Path(os.environ.get("AUTHORS_FASTVID", "/work/oracles/fidelity/src/fastvid"))
MODELING = "fastvid_qwen25vl/lmms-eval/lmms_eval/models/qwenvlutils/modeling_qwen2_5_vl.py"
SCRIPT = {"fastvid_DySeg_c": 8, "fastvid_DySeg_tau": 0.84, "fastvid_DySeg_ignore": 0.95, "fastvid_STPrune_d": 0.4,
          "fastvid_DTM_p": 4, "fastvid_DTM_beta": 0.6}
NEW_TOKENS = 8


def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k):
    """Stand-in: non-causal softmax attention inside each [cu[i], cu[i+1]) block; q, k, v [n, H, d] -> [n, H, d]."""
    out = torch.empty_like(q)
    bounds = cu_q.tolist()
    for a, b in itertools.pairwise(bounds):
        qi, ki, vi = (t[a:b].transpose(0, 1).float() for t in (q, k, v))  # [H, m, d]
        probs = torch.softmax(qi @ ki.transpose(-1, -2) / qi.shape[-1] ** 0.5, dim=-1)
        out[a:b] = (probs @ vi).transpose(0, 1).to(q.dtype)
    return out


def apply_rotary_emb(x, cos, sin):
    """Stand-in for flash-attn's non-interleaved rotary: x [b, n, H, d], cos/sin [n, d / 2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class _NoNoiseTorch:
    """Their module's `torch`, with `rand` (used only for the 1e-6 density noise) returning zeros."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def rand(*args, **kwargs):
        return torch.zeros(*args, **kwargs)


def load_their_module():
    """Their modeling file as a module, with the two flash-attn stand-ins and the noise at zero."""
    path = CHECKOUT / MODELING
    spec = importlib.util.spec_from_file_location("fastvid_qwen25vl_modeling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.flash_attn_varlen_func = flash_attn_varlen_func
    module.apply_rotary_emb = apply_rotary_emb
    module.torch = _NoNoiseTorch()
    return module


def generate(model, inputs):
    """Greedy ids and first-step logits."""
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist(), out.logits[0][0].float()


def main() -> None:
    work = Path(sys.argv[1])
    budgets = [float(b) for b in sys.argv[2:]]
    sys.path.insert(0, str(HERE))
    from convert25 import convert
    from transformers import Qwen2_5_VLForConditionalGeneration

    if not (work / "ckpt451" / "config.json").is_file():
        convert(work / "ckpt", work / "ckpt451")
    saved = torch.load(work / "inputs.pt")
    inputs = {k: saved[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")}
    stock = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(work / "ckpt451"), torch_dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    stock.get_rope_index = lambda *args, **kwargs: (saved["position_ids"], saved["rope_deltas"])  # same positions
    with torch.inference_mode():
        dense_ids, dense_logits = generate(stock, inputs)
    theirs = load_their_module()
    model = theirs.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(work / "ckpt451"), torch_dtype=torch.float32, attn_implementation="sdpa").eval()
    for block in model.visual.blocks:  # their saliency lives in the FlashAttention2 vision class only
        block.attn.__class__ = theirs.Qwen2_5_VLVisionFlashAttention2
        block.attn.head_dim = block.attn.qkv.in_features // block.attn.num_heads
    their_rope_index = model.get_rope_index

    def rope_index(*args, **kwargs):  # their prompt lengths, our (5.x) positions
        _, _, start, end = their_rope_index(*args, **kwargs)
        return saved["position_ids"], saved["rope_deltas"], start, end

    model.get_rope_index = rope_index
    kept: list[torch.Tensor] = []
    forward = model.model.forward

    def recording_forward(*args, **kwargs):  # the kept sequence positions, from the position ids they slice
        if kwargs["inputs_embeds"].shape[1] > 1:
            kept.append(kwargs["cache_position"].clone())
        return forward(*args, **kwargs)

    model.model.forward = recording_forward
    video = torch.nonzero(inputs["input_ids"][0] == model.config.video_token_id).flatten()
    records = []
    for budget in budgets:
        model.set_my_kwargs(fastvid_retention_ratio=budget, **SCRIPT)
        kept.clear()
        try:
            with torch.inference_mode():
                ids, logits = generate(model, inputs)
        except Exception as error:  # noqa: BLE001 - their outcome, recorded
            records.append({"budget": budget, "error": f"{type(error).__name__}: {error}"})
            print(f"theirs: fastvid budget={budget}: {type(error).__name__}: {error}")
            continue
        positions = kept[0]
        inside = positions[(positions >= video[0]) & (positions <= video[-1])] - video[0]
        records.append({"budget": budget, "kept": inside.tolist(), "kept_count": int(inside.numel()),
                        "answer_ids": ids, "first_logits": logits.tolist()})
        print(f"theirs: fastvid budget={budget}: kept {inside.numel()}, ids {ids}")
    (work / "theirs.json").write_text(json.dumps({"dense": {"answer_ids": dense_ids,
                                                            "first_logits": dense_logits.tolist()},
                                                  "runs": records}))


if __name__ == "__main__":
    main()
