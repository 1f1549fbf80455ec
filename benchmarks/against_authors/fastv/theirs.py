"""FastV's own code (pkunlp-icler/FastV @d165972: its transformers fork, src/transformers, 4.31.0, whose
LlamaModel.forward holds FastV) on the language model and inputs ours.py saved, in its own venv.

    python theirs.py WORK_DIR

Their "inplace" FastV (token drop): before decoder layer AGG_LAYER, the last token's attention in layer AGG_LAYER - 1
(mean over heads) ranks the image tokens [SYS_LENGTH, SYS_LENGTH + IMAGE_TOKEN_LENGTH) and the top ATTENTION_RANK
stay (with their positions). Per run of ours (our layer K, our kept count k) it runs AGG_LAYER = K + 1 (the same
layers pruned as ours) and AGG_LAYER = K (their code read with the paper's K), ATTENTION_RANK = k. Nothing is
patched: the fork runs as is (output_attentions=True, use_cache=False, as its inplace path requires).
Writes WORK_DIR/theirs.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def run(model, embeds, video_start, video_tokens, agg_layer=None, rank=None):
    """Last-position logits and the kept video tokens (None: FastV off)."""
    model.model.use_fast_v = agg_layer is not None
    model.model.fast_v_inplace = True
    model.model.fast_v_sys_length = video_start
    model.model.fast_v_image_token_length = video_tokens
    model.model.fast_v_attention_rank = rank
    model.model.fast_v_agg_layer = agg_layer
    seen = {}
    hook = None

    def record(_module, _args, kwargs):  # the positions their pruned sequence carries into layer AGG_LAYER
        seen.setdefault("positions", kwargs["position_ids"][0].clone())

    if agg_layer is not None:
        hook = model.model.layers[agg_layer].register_forward_pre_hook(record, with_kwargs=True)
    with torch.inference_mode():
        logits = model(inputs_embeds=embeds, output_attentions=True, use_cache=False, return_dict=True).logits
    if hook is not None:
        hook.remove()
    kept = None
    if "positions" in seen:
        p = seen["positions"]
        kept = (p[(p >= video_start) & (p < video_start + video_tokens)] - video_start).tolist()
    return logits[0, -1].float(), kept


def main() -> None:
    work = Path(sys.argv[1])
    saved = torch.load(work / "inputs.pt")
    ours = json.loads((work / "ours.json").read_text())
    config = LlamaConfig.from_pretrained(str(work / "lm"))
    for key, value in {"use_fast_v": False, "fast_v_sys_length": 0, "fast_v_image_token_length": 0,
                       "fast_v_attention_rank": 0, "fast_v_agg_layer": 0, "fast_v_inplace": True}.items():
        setattr(config, key, value)  # the fields their LlamaModel.__init__ reads
    model = LlamaForCausalLM.from_pretrained(str(work / "lm"), config=config, torch_dtype=torch.float32).eval()
    args = (saved["embeds"], saved["video_start"], saved["video_tokens"])
    dense, _ = run(model, *args)
    runs = []
    for r in ours["runs"]:
        for agg in (r["layer"] + 1, r["layer"]):
            logits, kept = run(model, *args, agg_layer=agg, rank=r["kept_count"])
            runs.append({"budget": r["budget"], "layer": r["layer"], "agg_layer": agg, "kept": sorted(kept),
                         "logits": logits.tolist()})
            print(f"theirs: fastv AGG_LAYER={agg} rank={r['kept_count']}: kept {len(kept)}")
    (work / "theirs.json").write_text(json.dumps({"dense": dense.tolist(), "runs": runs}))


if __name__ == "__main__":
    main()
