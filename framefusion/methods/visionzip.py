"""VisionZip (CVPR 2025, arXiv 2412.04467), video variant: per frame, keep the dominant tokens the vision encoder
attends to most and merge the rest into a few contextual tokens, before the LLM.

Per frame of S kept tokens (HoliTom's LLaVA-OneVision port of VisionZip, `visionzip/llava_arch.py`, which the
published video numbers come from): D = int(S * 54 / 64) dominant tokens, C = S - D contextual ones.
1. dominant: the D tokens with the highest saliency, the attention they receive in the vision encoder's layer
   that produces the features (mean over heads and queries; adapters/vision_attention.py);
2. contextual targets: the other n tokens in index order, every step-th one, step = max(1, n // C), the first C;
3. every other non-dominant token joins the target it is most cosine-similar to, and a target becomes
   x_target + mean(its members): the authors' code adds the mean to the target's own feature (no averaging
   with it), in the original CLIP version and in the LLaVA-OneVision port alike; this is kept.

Deliberate deviations, with the reason:
- Merge metric: the authors compare the vision layer's keys averaged over heads; here the projected token
  features (what the LLM receives) are compared, the choice of VidCom2's Qwen adaptation, because the keys of
  the fused Qwen-VL tokens (2x2 patches) and of LLaVA-OneVision's pooled tokens do not exist as such.
- Positions: the authors' LLaVA code rebuilds the sequence with dominant then contextual tokens, renumbered; here
  every kept token keeps its own position and a contextual token the position of its target (VidCom2's Qwen
  adaptation does the same), as every method of this package.
- Budget (budget_rule="matched", the default): S per frame is an exact apportionment of round(budget * T * P)
  over the frames (floors plus the largest remainders, at least 1 a frame). budget_rule="authors": every frame
  keeps the same S = int(P * budget) (at least 1), the authors' arithmetic: HoliTom's port takes S per frame as
  a constant (`SPATIAL_TOKENS`), and VidCom2's Qwen adaptation computes int(P * R); at R = 0.25 on 16-token
  frames both keep 4 a frame, where "matched" keeps round(0.25 * T * 16). Below one token a frame (P * R < 1)
  their code divides by a contextual count of 0; here S is 1 (one contextual token) and the kept_ratio says so.
- saliency="norm" ranks by the feature L2 norm instead (VidCom2's Qwen adaptation); families whose vision
  encoder attention is not read here need it.

VisionZip's own repository (dvlab-research/VisionZip @3151f6d) patches only the original LLaVA's CLIP tower for
LLaVA-1.5 / LLaVA-NeXT images: no video and no Qwen code, so every video VisionZip is an adaptation. This one follows
HoliTom's LLaVA-OneVision port, the one with published video numbers: with budget_rule="authors" and the same
saliency and metric it gives the port's tokens exactly (benchmarks/against_authors/selection, max |diff| 0). VidCom2's
Qwen adaptation (xuyang-liu16/VidCom2 branch qwen @a85d485, token_compressor/visionzip/) is a different algorithm:
a dominant share of 0.6 ranked by the feature norm, contextual anchors by the mean cosine to 5 nearest neighbours,
each merged token the plain mean of its members (anchor included); the kept sets overlap by Jaccard 0.07-0.56 with
this one at the same per-frame counts.
"""

from __future__ import annotations

import torch
from torch import nn

from framefusion.methods.clustering import nearest_centre
from framefusion.methods.common import check_budget_rule
from framefusion.methods.oneshot import Selection, install_pre_llm
from framefusion.methods.vidcom2 import frame_budgets

DOMINANT_SHARE = 54 / 64  # VisionZip's dominant : contextual = 54 : 10


def split_counts(kept: torch.Tensor, dominant_share: float = DOMINANT_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame kept counts [T] -> (dominant [T], contextual [T]) as int(S * share) and S - that."""
    dominant = torch.floor(kept.double() * dominant_share).long()
    return dominant, kept - dominant


def stride_targets(remaining: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [count] of the contextual targets: every step-th of the remaining indices [n], step = n // count."""
    if count <= 0 or remaining.numel() == 0:
        return remaining[:0]
    step = max(1, remaining.numel() // count)
    return remaining[::step][:count].contiguous()  # contiguous: searchsorted over it wants that


def zip_frame(features: torch.Tensor, saliency: torch.Tensor, dominant: int, contextual: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame's tokens features [P, D], saliency [P] -> (keep [P] bool, features [P, D], merged_into [P])."""
    patches = features.shape[0]
    order = torch.argsort(saliency, descending=True, stable=True)  # most attended first, ties to the lower index
    is_dominant = torch.zeros(patches, dtype=torch.bool, device=features.device)
    is_dominant[order[:dominant]] = True
    remaining = torch.nonzero(~is_dominant).flatten()  # [n] index order
    targets = stride_targets(remaining, contextual)  # [C]
    keep = is_dominant.clone()
    keep[targets] = True
    merged_into = torch.full((patches,), -1, dtype=torch.long, device=features.device)
    merged = features.clone()
    members = remaining[~torch.isin(remaining, targets)]  # [m] non-dominant, non-target tokens
    if targets.numel() and members.numel():
        owner = targets[nearest_centre(features[members], features[targets])]  # [m] target index of each member
        sums = torch.zeros_like(features[targets], dtype=torch.float32)  # [C, D]
        slot = torch.searchsorted(targets, owner)  # [m] row of each member's target
        sums.index_add_(0, slot, features[members].float())
        counts = torch.bincount(slot, minlength=targets.numel()).clamp(min=1).to(sums.dtype)
        merged[targets] = (features[targets].float() + sums / counts[:, None]).to(features.dtype)
        merged_into[members] = owner
    return keep, merged, merged_into


def visionzip_frame_counts(frames: int, patches: int, budget: float, budget_rule: str = "matched") -> torch.Tensor:
    """Tokens S [T] each frame keeps: round(budget * T * P) apportioned ("matched"), or int(P * budget) >= 1 each
    ("authors")."""
    if budget_rule == "authors":
        return torch.full((frames,), min(max(int(patches * budget), 1), patches), dtype=torch.long)
    return frame_budgets(torch.ones(frames), patches, round(budget * frames * patches))


def visionzip_video(features: torch.Tensor, budget: float, saliency: torch.Tensor,
                    budget_rule: str = "matched") -> Selection:
    """features [T, P, D], saliency [T, P] of one video -> Selection over its T * P tokens (frame-major)."""
    frames, patches, _ = features.shape
    kept = visionzip_frame_counts(frames, patches, budget, budget_rule)  # [T]
    dominant, contextual = split_counts(kept)
    keep, merged, merged_into = [], [], []
    for f in range(frames):  # one frame at a time, as VisionZip zips each image: a loop over frames
        k, m, into = zip_frame(features[f], saliency[f], int(dominant[f]), int(contextual[f]))
        keep.append(k)
        merged.append(m)
        merged_into.append(torch.where(into >= 0, into + f * patches, into))
    return Selection(torch.cat(keep), torch.cat(merged), torch.cat(merged_into))


def apply_visionzip(model: nn.Module, budget: float = 0.3, saliency: str = "attention",
                    budget_rule: str = "matched") -> nn.Module:
    """Install VisionZip in place: round(budget * N_v) dominant and contextual tokens per video, before the LLM
    (budget_rule "authors": int(P * budget) a frame)."""
    check_budget_rule(budget_rule)

    def video_fn(features: torch.Tensor, retention: float, scores: torch.Tensor) -> Selection:
        return visionzip_video(features, retention, scores, budget_rule)

    return install_pre_llm(model, "visionzip", "VisionZip", budget, video_fn, saliency=saliency)
