"""A slow reference of VisionZip's per-frame selection and merge, written from the authors' description with loops."""

from __future__ import annotations

import math

import torch


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def reference_visionzip(features: torch.Tensor, budget: float, saliency: torch.Tensor):
    """features [T, P, D], saliency [T, P] -> (keep [T*P] bool, features [T*P, D], merged_into [T*P])."""
    frames, patches, dim = features.shape
    target = min(max(round(budget * frames * patches), frames), frames * patches)
    counts = [target // frames + (1 if f < target % frames else 0) for f in range(frames)]
    keep = torch.zeros(frames * patches, dtype=torch.bool)
    out = features.reshape(frames * patches, dim).clone()
    merged_into = torch.full((frames * patches,), -1, dtype=torch.long)
    for f in range(frames):
        kept = counts[f]
        dominant_count = math.floor(kept * 54 / 64)
        contextual_count = kept - dominant_count
        ranked = sorted(range(patches), key=lambda p: (-float(saliency[f, p]), p))
        dominant = set(ranked[:dominant_count])
        remaining = [p for p in range(patches) if p not in dominant]
        targets = []
        if contextual_count > 0 and remaining:
            step = max(1, len(remaining) // contextual_count)
            targets = remaining[::step][:contextual_count]
        members = {t: [] for t in targets}
        for p in remaining:
            if p in targets or not targets:
                continue
            best = max(targets, key=lambda t: (cosine(features[f, p], features[f, t]), -t))
            members[best].append(p)
        for p in dominant | set(targets):
            keep[f * patches + p] = True
        for t, group in members.items():
            if group:
                mean = sum(features[f, p].double() for p in group) / len(group)
                out[f * patches + t] = (features[f, t].double() + mean).to(out.dtype)
                for p in group:
                    merged_into[f * patches + p] = f * patches + t
    return keep, out, merged_into
