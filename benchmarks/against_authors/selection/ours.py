"""Our side of the selection checks: the pure per-video functions of EVS, DyCoke (TTM), VisionZip and HoliTom (outer
stage) on fixed inputs, for theirs.py to run the authors' functions on the same tensors.

    python ours.py WORK_DIR        (this repository's venv)

Inputs (WORK_DIR/inputs.pt): "qwen2vl", the projected video features of the tiny Qwen2-VL of the VidCom2 harness on
its clip (8 temporal frames x 16 tokens x 64), with the saliency of our vision probe; "synthetic", 8 frames x 49
tokens x 32 in which half the patches are static (small noise), for the temporal merges. Writes WORK_DIR/ours.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
BUDGETS = (0.1, 0.25, 0.3, 0.5)


def synthetic(frames: int = 8, patches: int = 49, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [T, P, D] with a static half (noise 0.05) and a moving half, and a random saliency [T, P]."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(patches, dim, generator=generator)
    moving = torch.randn(frames, patches, dim, generator=generator)
    noise = 0.05 * torch.randn(frames, patches, dim, generator=generator)
    static = torch.arange(patches) % 2 == 0
    features = torch.where(static[None, :, None], base[None] + noise, moving)
    return features, torch.rand(frames, patches, generator=generator)


def model_features() -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny Qwen2-VL's projected features of the e2e clip, and our probe's saliency of them."""
    sys.path.insert(0, str(REPO / "benchmarks/against_authors/qwen_e2e"))
    from ours import FRAMES, QUESTION, write_inputs

    from framefusion.adapters import adapter_for
    from framefusion.pipeline.answer import model_inputs
    from framefusion.pipeline.loading import load_model
    from framefusion.video import Sampling

    work = Path("/tmp/fidelity_selection_ckpt")
    ckpt, clip = write_inputs(work, "qwen2_vl")
    loaded = load_model(str(ckpt), device="cpu", dtype="fp32")
    inputs = model_inputs(loaded, [Sampling(num_frames=FRAMES).load(clip)], QUESTION)
    module = adapter_for(loaded.model).multimodal_module(loaded.model)
    probe = adapter_for(loaded.model).vision_probe(loaded.model)
    with torch.inference_mode():
        out = module.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                        video_grid_thw=inputs["video_grid_thw"])
    features = getattr(out, "pooler_output", out)
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
    saliency = probe.take()
    probe.remove()
    t, h, w = inputs["video_grid_thw"][0].tolist()
    return features.reshape(t, h * w // 4, -1).float(), saliency.reshape(t, h * w // 4).float()


def main() -> None:
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from framefusion.methods.dycoke import ttm_keep
    from framefusion.methods.evs import evs_retention_mask
    from framefusion.methods.holitom import HoliTomConfig, holitom_video
    from framefusion.methods.visionzip import visionzip_video

    inputs = {"qwen2vl": model_features(), "synthetic": synthetic()}
    torch.save(inputs, work / "inputs.pt")
    records = []
    for name, (features, saliency) in inputs.items():
        frames, patches, _ = features.shape
        for budget in BUDGETS:
            for rule in ("matched", "authors"):
                keep = evs_retention_mask(features, budget, rule)
                records.append({"input": name, "method": "evs", "budget": budget, "rule": rule,
                                "kept": torch.nonzero(keep).flatten().tolist()})
                for saliency_name, scores in (("given", saliency), ("norm", features.norm(dim=-1))):
                    selection = visionzip_video(features, budget, scores, rule)
                    records.append({"input": name, "method": f"visionzip/{saliency_name}", "budget": budget,
                                    "rule": rule, "kept": torch.nonzero(selection.keep).flatten().tolist(),
                                    "features": selection.features.reshape(frames * patches, -1).tolist()})
            for rule in ("matched", "authors"):
                selection = holitom_video(features, budget, saliency, HoliTomConfig(), rule)
                records.append({"input": name, "method": "holitom", "budget": budget, "rule": rule,
                                "kept": torch.nonzero(selection.keep).flatten().tolist(),
                                "features": selection.features.reshape(frames * patches, -1).tolist()})
        keep = ttm_keep(features, int((1.0 - 0.7) * patches))  # DyCoke's own K = 0.7
        records.append({"input": name, "method": "dycoke", "budget": None, "rule": "authors' K=0.7",
                        "kept": torch.nonzero(keep).flatten().tolist()})
    (work / "ours.json").write_text(json.dumps(records))
    print(f"ours: {len(records)} records")


if __name__ == "__main__":
    main()
