"""The VidCom2 authors' Qwen2-VL code (xuyang-liu16/VidCom2, branch qwen @a85d485, token_compressor/vidcom2/) on the
inputs ours.py saved, in the oracle venv (transformers 4.51.3).

    python theirs.py WORK_DIR BUDGET [BUDGET ...]      (AUTHORS_VIDCOM2: the checkout, default below)

Three patches, because the branch does not run as shipped (see README.md): the loader's attribute, the return
value of vidcom2_compression (indices, as its caller expects), and the hard-coded system prompt length 15.
Writes WORK_DIR/theirs.json: per budget the kept video-token indices, greedy ids and first-token logits, and the
dense run (to check that both sides run the same model).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CHECKOUT = Path(os.environ.get("AUTHORS_VIDCOM2", "/work/oracles/fidelity/src/vidcom2"))
NEW_TOKENS = 8
SYSTEM_LENGTH = "system_token_length=15"  # the constant patch 3 replaces


def load_their_forward():
    """Import their Qwen2-VL module with patch 3 applied to its source; patch 2 on their compression module."""
    sys.path.insert(0, str(CHECKOUT))
    import token_compressor.vidcom2.vidcom2 as core

    def map_features_to_indices(indices, flat, img, spec):  # patch 2: the caller adds offsets to indices
        assert spec["mapper"] == "linear"
        return core._map_linear_offset(indices, flat.shape[0] // len(indices))

    core.map_features = map_features_to_indices
    path = CHECKOUT / "token_compressor/vidcom2/models/qwen2_vl.py"
    source = path.read_text()
    assert source.count(SYSTEM_LENGTH) == 1
    source = source.replace(SYSTEM_LENGTH, "system_token_length=int(torch.nonzero("
                                           "input_ids[0] == self.config.video_token_id)[0])")  # patch 3
    spec = importlib.util.spec_from_loader("token_compressor.vidcom2.models.qwen2_vl", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - their module, patch 3 applied
    return module


def generate(model, inputs):
    """Greedy ids and first-step logits, as ours."""
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist(), out.logits[0][0].float()


def main() -> None:
    work = Path(sys.argv[1])
    budgets = [float(b) for b in sys.argv[2:]]
    sys.path.insert(0, str(HERE.parent))
    # the FrameFusion harness's 5.x -> 4.51 Qwen2-VL converter, with its checks
    from convert import convert
    from transformers import Qwen2VLForConditionalGeneration

    if not (work / "ckpt451" / "config.json").is_file():
        convert(work / "ckpt", work / "ckpt451")
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(work / "ckpt451"), torch_dtype=torch.float32,
                                                            attn_implementation="sdpa").eval()
    saved = torch.load(work / "inputs.pt")
    inputs = {k: saved[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")}
    model.get_rope_index = lambda *args, **kwargs: (saved["position_ids"], saved["rope_deltas"])  # same positions
    with torch.inference_mode():
        dense_ids, dense_logits = generate(model, inputs)
    theirs = load_their_forward()
    kept: list[torch.Tensor] = []
    compress = theirs.vidcom2_compression

    def recording(*args, **kwargs):  # records what their ViT forward hands to their generation forward
        kept.append(compress(*args, **kwargs))
        return kept[-1]

    theirs.vidcom2_compression = recording
    model.visual.forward = types.MethodType(theirs.Qwen2VL_ViT_forward, model.visual)  # patch 1: 4.51's attribute
    model.forward = types.MethodType(theirs.Qwen2VLGeneration_forward, model)
    records = []
    for budget in budgets:
        os.environ["R_RATIO"] = repr(budget)  # what their loader reads
        kept.clear()
        try:
            with torch.inference_mode():
                ids, logits = generate(model, inputs)
        except Exception as error:  # noqa: BLE001 - recorded as their outcome
            records.append({"budget": budget, "error": f"{type(error).__name__}: {error}"})
            continue
        records.append({"budget": budget, "kept": kept[0].tolist(), "kept_count": int(kept[0].numel()),
                        "answer_ids": ids, "first_logits": logits.tolist()})
        print(f"theirs: vidcom2 budget={budget}: kept {kept[0].numel()}, ids {ids}")
    (work / "theirs.json").write_text(json.dumps({"dense": {"answer_ids": dense_ids,
                                                            "first_logits": dense_logits.tolist()},
                                                  "runs": records}))


if __name__ == "__main__":
    main()
