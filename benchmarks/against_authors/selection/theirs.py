"""The authors' selection functions on the inputs ours.py saved (oracle venv; only torch is needed).

    python theirs.py WORK_DIR

- EVS: vLLM `vllm/multimodal/video_prune/evs.py` @d750efb, `compute_retention_mask` (a verbatim excerpt of the two
  functions, $VLLM_EVS, the repository being too large to mirror whole).
- DyCoke: KD-TAO/DyCoke @dd74634, `dycole_ttm` in llava/model/llava_arch.py.
- VisionZip, HoliTom's LLaVA-OneVision port: cokeshao/HoliTom @e9b2972, visionzip/llava_arch.py, the function
  `visionzip` nested in `prepare_inputs_labels_for_multimodal`, per frame (metric: the features, as ours).
- VisionZip, VidCom2's Qwen adaptation: xuyang-liu16/VidCom2 branch qwen @a85d485,
  token_compressor/visionzip/core.py `compress_features`.
- HoliTom (outer stage): cokeshao/HoliTom @e9b2972, holitom/llava_arch.py, the methods of
  LlavaMetaForCausalLM_holitom called in the order of its prepare_inputs_labels_for_multimodal (its lines 376-405).

Functions inside modules whose imports need the whole LLaVA code base (DyCoke, HoliTom) are taken from their file
by name with `ast` and run unchanged; their DPC-kNN density noise `torch.rand(...) * 1e-6` is set to zero.
Writes WORK_DIR/theirs.json.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F

SRC = Path(os.environ.get("AUTHORS_SRC", "/work/oracles/fidelity/src"))
VLLM_EVS = Path(os.environ.get("VLLM_EVS", SRC / "vllm_evs" / "evs.py"))
BUDGETS = (0.1, 0.25, 0.3, 0.5)


class _NoNoiseTorch:
    """`torch` for the authors' functions, with `rand` (only their 1e-6 density noise) returning zeros."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def rand(*args, **kwargs):
        return torch.zeros(*args, **kwargs)


def functions_from(path: Path, names: list[str], inside: str | None = None) -> dict:
    """The named functions (methods of class `inside`, or nested anywhere) of a file, compiled unchanged."""
    text = path.read_text()
    tree = ast.parse(text)
    scope = {"torch": _NoNoiseTorch(), "F": F, "math": math, "os": os, "rank0_print": lambda *a, **k: None}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and inside and node.name != inside:
            continue
        if isinstance(node, ast.FunctionDef) and node.name in names and node.name not in found:
            source = textwrap.dedent(ast.get_source_segment(text, node, padded=True))
            exec(compile(source, str(path), "exec"), scope)  # noqa: S102 - their function, unchanged
            found[node.name] = scope[node.name]
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"theirs.py: {sorted(missing)} not found in {path}")
    return found


def rows_to_indices(output: torch.Tensor, flat: torch.Tensor) -> list[int]:
    """The input index of each output row that equals an input row exactly (an unchanged, kept token)."""
    index = {row.numpy().tobytes(): i for i, row in enumerate(flat)}
    return sorted(index[row.numpy().tobytes()] for row in output if row.numpy().tobytes() in index)


def evs(records, name, features):
    spec = importlib.util.spec_from_file_location("vllm_evs", VLLM_EVS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frames, patches, dim = features.shape
    side = math.isqrt(patches)
    for budget in BUDGETS:
        mask = module.compute_retention_mask(features.reshape(-1, dim), (frames, 2 * side, 2 * side), 2, 1 - budget)
        records.append({"input": name, "method": "evs", "budget": budget,
                        "kept": torch.nonzero(mask).flatten().tolist()})


def dycoke(records, name, features):
    ttm = functions_from(SRC / "dycoke/llava/model/llava_arch.py", ["dycole_ttm"])["dycole_ttm"]
    _, patches, dim = features.shape
    flat = features.reshape(-1, dim)
    out = ttm(flat, num_tokens_per_frame=patches, merging_ratio=0.7)
    records.append({"input": name, "method": "dycoke", "budget": None, "rows": out.tolist(),
                    "count": int(out.shape[0])})


def visionzip_holitom_port(records, name, features, saliency):
    zip_ = functions_from(SRC / "holitom/visionzip/llava_arch.py", ["visionzip"])["visionzip"]
    frames, patches, _ = features.shape
    for saliency_name, scores in (("given", saliency), ("norm", features.norm(dim=-1))):
        for budget in BUDGETS:
            spatial = max(int(patches * budget), 1)  # SPATIAL_TOKENS, as our budget_rule="authors"
            dominant = int(spatial * 54 / 64)
            kept, contextual = [], []
            for f in range(frames):
                out = zip_(features[f:f + 1], scores[f:f + 1], features[f:f + 1], dominant, spatial - dominant,
                           torch.float32, "one_token")[0]  # [S, D]: dominant (index order), then contextual
                kept += [f * patches + i for i in rows_to_indices(out[:dominant], features[f])]
                contextual.append(out[dominant:])
            records.append({"input": name, "method": f"visionzip/{saliency_name}", "budget": budget,
                            "dominant": kept, "contextual": torch.cat(contextual).tolist()})


def visionzip_vidcom2_branch(records, name, features):
    sys.path.insert(0, str(SRC / "vidcom2"))
    from token_compressor.visionzip.core import compress_features

    frames, patches, dim = features.shape
    side = math.isqrt(patches)
    for budget in BUDGETS:
        _, keep = compress_features(features.reshape(-1, dim), torch.tensor([frames, 2 * side, 2 * side]), 2, budget)
        records.append({"input": name, "method": "visionzip/vidcom2-branch", "budget": budget,
                        "kept": sorted(keep.tolist())})


HOLITOM_METHODS = ["cluster_dpc_knn", "select_static_windows", "merge_tokens_by_clustering",
                   "merge_tokens_by_attention_density", "merge_tokens_by_density", "holitom",
                   "get_static_dynamic_features"]


def holitom(records, name, features, saliency, tau=0.8, beta=0.6, d=0.0, k=7, max_window=1024):
    methods = functions_from(SRC / "holitom/holitom/llava_arch.py", HOLITOM_METHODS, "LlavaMetaForCausalLM_holitom")
    this = type("Holitom", (), methods)()
    frames, patches, _ = features.shape
    for budget in BUDGETS:
        # the call sequence of their prepare_inputs_labels_for_multimodal for one video (pooled features given)
        normed = F.normalize(features, p=2, dim=-1)
        feature_sim = F.cosine_similarity(normed[:-1], normed[1:], dim=-1)
        windows, reduced = this.select_static_windows(feature_sim, frames, tau, max_window)
        total = frames * patches
        ratio = min(budget / ((total - reduced) / total), 1)
        static, dynamic, _, attn, static_pos, dynamic_pos = this.get_static_dynamic_features(
            features, saliency, windows, feature_sim, tau)
        out = [this.holitom(static[i], dynamic[i], attn[i], static_pos[i], dynamic_pos[i], v - u + 1, ratio, d,
                            beta, k, torch.float32, "one_token") for i, (u, v) in enumerate(windows)]
        out = torch.cat(out)
        records.append({"input": name, "method": "holitom", "budget": budget, "count": int(out.shape[0]),
                        "windows": [list(map(int, w)) for w in windows], "tokens": out.tolist()})


def main() -> None:
    work = Path(sys.argv[1])
    inputs = torch.load(work / "inputs.pt")
    records = []
    for name, (features, saliency) in inputs.items():
        evs(records, name, features)
        dycoke(records, name, features)
        visionzip_holitom_port(records, name, features, saliency)
        visionzip_vidcom2_branch(records, name, features)
        holitom(records, name, features, saliency)
    (work / "theirs.json").write_text(json.dumps(records))
    print(f"theirs: {len(records)} records")


if __name__ == "__main__":
    main()
