"""FlashVID (ICLR 2026, arXiv 2602.08024): tree-based spatiotemporal token merging before the LLM, then one
attention-ranked prune inside it.

Followed: the authors' code, Fanziyang-v/FlashVID @1d37422 (transformers 4.57.3): `flashvid/utils.py`
(`flashvid_compression`, `segment_compression`, `segment`, `spatiotemporal_compression`, `dpc_knn`,
`fastv_prune`), `flashvid/token_selection.py`, and the per-family patches (`modeling_qwen2_5_vl.py`,
`modeling_qwen3_vl.py`, `llava_arch.py`). Before the LLM, per video on its projected features X [T, P, D] and the
vision encoder's saliency S [T, P] (flashvid_video.py holds the tensor functions):
1. DySeg: cut the video into segments of similar frames (FastVID's rule: cut where the cosine of consecutive
   frame means is below segment_threshold, and at the lowest transitions until there are min_segments).
2. Budget per frame (authors' rule): b = ceil(P R e) tokens, s = ceil(b alpha) of them selected, c = b - s
   merged (R the retention, e the expansion 1.25).
3. ADTS, per frame: s greedy farthest-point picks over the cosine distance of the frame's tokens, the distance
   to token n scaled by 1e6 S_n ("attn_div", ADTS v1), also by its event relevance <x_n, mean of the segment's
   frame means> ("attn_div_v2"); "attn" takes the s most salient, "div" the unscaled distance.
4. TSTM, per segment with c > 0: each free (unselected) token of frame t >= 1 links to its most cosine-similar
   free token of frame t - 1 and merges into it above temporal_threshold (0.8); a tree of links becomes one
   token at its root (the earliest frame): the mean of its members (tree_weights "mean"), or the authors' sum of
   its members over 1 + the root's direct children ("authors"). Where fewer than the segment's b T_s tokens would
   be left, the threshold is lowered to the (T_s P - b T_s)-th largest similarity (those strictly above it merge).
5. Spatial merging: the segment's c T_s context tokens are shared over its frames in proportion to their trees;
   a frame's trees are clustered by DPC-kNN (k = min(clusters, 7)), each cluster one token: the mean of its
   trees' tokens, at its centre tree's root.
Inside the LLM, prefill only, at `pruning_layer` K: keep the ceil(r V) of the V remaining video tokens the last
prompt token attends to most (head mean of layer K - 1's attention row), r = llm_retention_ratio; the KV caches of
layers 0..K - 1 keep all V.

Family defaults (the authors' scripts): Qwen2-VL, Qwen2.5-VL: ADTS v1 ("attn_div"), min_segments 4, K = 20 of 28
layers, r = 0.3 (`scripts/qwen2_5_vl.sh`); Qwen3-VL and Qwen3.5: "attn_div", min_segments 4, K = 28 of 36,
r = 0.1 (`scripts/qwen3_vl.sh`); every other family: "attn_div_v2", min_segments 8, K = 20 of 28, r = 0.3 (the
function's defaults and `scripts/llava_ov.sh`). The authors' code runs on LLaVA-OneVision / LLaVA-Video,
Qwen2.5-VL and Qwen3-VL only; the algorithm needs only features, per-frame grids and a saliency, so it runs on
every family here, with saliency="norm" where the vision encoder's attention is not read (InternVL, MiniCPM-V,
LLaVA-NeXT-Video).

Budget (budget_rule):
- "matched" (default): the same kept_ratio as every method (the mean over the L layers of the video tokens in
  each KV cache, over N_v). K = round(L K_ref / L_ref) (20 / 28 or 28 / 36, moved to the first point after an
  attention layer on hybrid decoders); the outer stage keeps M = round(R_o T P) tokens a video, R_o = budget L /
  (K + (L - K) r) (the authors' e = 1.25 is this at L = 28, K = 20, r = 0.3: R_o = 1.25 budget), apportioned
  over the frames by largest remainders (at least one a frame), s_f = ceil(alpha k_f) of a frame's k_f selected;
  the inner stage keeps m = round((budget L N_v - K M) / (L - K)) (at least 1), so the layer mean is the budget
  up to rounding. Where R_o would exceed 1, everything is kept before the LLM and m alone meets the budget.
- "authors": their arithmetic: R = budget, b = ceil(P R e), s = ceil(b alpha) in floating point, the context
  clusters ceil(n_f c T_s / n) per frame, K absolute (20, or 28 for Qwen3-VL; no inner prune on a model with at
  most K layers) and m = ceil(r V), and (unless tree_weights says otherwise) their tree weights. Their R is the
  layer mean of a 28-layer model (36 for Qwen3-VL): on another depth kept_ratio differs from it, and the
  statistics report what was reached.

Checked against the authors' code (benchmarks/against_authors/flashvid, a tiny 28-layer Qwen2.5-VL through
generate, and their flashvid_compression on random features): with budget_rule="authors" at budget 0.1 (no
merged tokens) the kept tokens before the LLM and at layer 20, the greedy ids (also through `framefusion ask
--json`) and the first-token logits (1.8e-7) equal theirs; with merges, in one segment and with their density
noise replaced by this package's tie-break, too; every other difference comes from the deviations below.

Deliberate deviations, with the reason:
- Tree weights ("matched" only, tree_weights="mean"): the authors add one to a token's count per merged child
  instead of the child's own count, so a tree's token is its sum over 1 + the root's direct children: a patch
  that stays the same over k frames comes out at k / 2 times its value (twice it over 4 frames, 16 times over
  32). That is a bug in their count; the matched rule uses the tree mean, budget_rule="authors" keeps theirs
  (the published numbers were made with it).
- One-frame segments: the authors cluster all P tokens of such a frame, the selected ones included (their
  selected tokens' features enter the cluster means), so a cluster centre can be a selected token, e.g. where
  one cluster's centre is picked by the density noise alone: the LLM then receives that token twice, at one
  position (1 to 7 such tokens a prompt in the harness). Here a one-frame segment clusters its unselected
  tokens, as the multi-frame path does; every token is received once.
- Density ties: DPC-kNN breaks them by a deterministic ramp (clustering.py, shared with FastVID and HoliTom)
  instead of U(0, 1) 1e-6 noise. With one cluster (k = 1, every density exp(0) = 1) the authors' centre, and
  with it the merged token's position, is random; here it is the first tree of the frame. With two (k = 2) a
  token's density is exp(-d_nn^2 / 2), the same for two mutual nearest neighbours, so the noise picks which of
  them can be a centre: at R = 0.1 (two clusters a frame) most frames' centres change with their seed. Where
  the densities differ by about one float32 step, their float32 and this float64 density order them
  differently even with the same tie-break (a few frames in the harness's R = 0.1 cases).
- ADTS v2 does not exclude tokens already picked (v1 does); where every remaining token's calibrated distance is
  at most ~0 (a negative event relevance) it picks one again and the frame keeps fewer. Here a picked token is
  never picked again (v1's rule for every variant).
- Exact budget ("matched" only): the authors' per-frame ceilings land above their retention (ceil(P R e)) and
  below or above it in the clusters (ceil per frame); here the counts are apportioned exactly, and a frame
  whose share of the context tokens rounds to none drops its trees (possible only when a segment has fewer
  context tokens than frames with trees).
- Positions: as the authors, a kept token keeps its position and a merged token sits at its root's (centre
  tree's) position; the engine never renumbers. (Their code on transformers 4.57.3 computes the mRoPE positions
  with the seconds per grid truncated to an integer, so 0.25 or 0.5 s per grid puts every frame at temporal
  position 0 (their lmms-eval runs had 1.0), and resumes the text after a video at another index than 5.x; here
  transformers 5.x's positions are used.)
- The inner prune runs at framefusion's reduction point K, after layer K - 1's attention and before its FFN;
  the authors prune the states entering layer K. A prune selects the same tokens either way (the FFN acts per
  token), so this changes nothing.
- Several videos in a prompt: each is reduced on its own, before and inside the LLM (the authors handle one).
- Parameters the authors have that are not kept: do_segment=False and complementary_segment=False are
  min_segments=1 with segment_threshold=-1 and min_segments=1. temporal_threshold >= 1 merges nothing in time
  here (the authors then divide by zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from framefusion.core.patches import PatchStack
from framefusion.core.prune import attention_importance, keep_most_important
from framefusion.methods.common import check_budget, check_budget_rule, per_video
from framefusion.methods.flashvid_video import SELECTIONS, TREE_WEIGHTS, flashvid_video
from framefusion.methods.install import install_method
from framefusion.methods.oneshot import (
    Selection,
    Stage,
    StagedReduction,
    check_saliency,
    keep_per_video,
    saliency_source,
)
from framefusion.methods.vidcom2 import frame_budgets


@dataclass(frozen=True)
class FlashVIDConfig:
    """FlashVID's hyperparameters; None fields take the family's default (FAMILY_DEFAULTS). ValueError out of range."""

    selection: str | None = None  # ADTS variant: attn_div (v1), attn_div_v2, attn, div
    alpha: float = 0.7  # share of a frame's tokens ADTS selects (the rest are merged context tokens)
    temporal_threshold: float = 0.8  # cosine above which a token merges into its parent in the previous frame
    segment_threshold: float = 0.9  # DySeg: cut where consecutive frames' mean features are less similar
    min_segments: int | None = None  # DySeg: at least this many segments
    expansion: float = 1.25  # e: "authors" rule only, the outer retention R e
    pruning_layer: int | None = None  # K; None: the family's, scaled to the depth ("matched") or absolute
    llm_retention_ratio: float | None = None  # r: share of the video tokens kept at layer K
    tree_weights: str | None = None  # "mean" or "authors"; None: "authors" under budget_rule="authors", else "mean"

    def __post_init__(self):
        if self.selection is not None and self.selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r}: choose one of {', '.join(SELECTIONS)}")
        if self.tree_weights is not None and self.tree_weights not in TREE_WEIGHTS:
            raise ValueError(f"tree_weights={self.tree_weights!r}: choose one of {', '.join(TREE_WEIGHTS)}")
        for name, low, high, low_open in (("alpha", 0.0, 1.0, False), ("temporal_threshold", -1.0, 1.0, False),
                                          ("segment_threshold", -1.0, 1.0, False), ("expansion", 0.0, math.inf, True),
                                          ("llm_retention_ratio", 0.0, 1.0, True)):
            value = getattr(self, name)
            if value is None and name == "llm_retention_ratio":
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high
                    or (low_open and value == low)):
                raise ValueError(f"{name}={value!r} is out of range: expected {low} {'<' if low_open else '<='} "
                                 f"{name} <= {high}")
        for name in ("min_segments", "pruning_layer"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} is out of range: expected an integer >= 1 or None")


@dataclass(frozen=True)
class FamilyDefaults:
    """The authors' script settings for one family: ADTS variant, DySeg minimum, K of a reference depth, r."""

    selection: str
    min_segments: int
    layer: int  # K on the reference model
    depth: int  # its layers
    llm_retention_ratio: float


QWEN25_SCRIPT = FamilyDefaults("attn_div", 4, 20, 28, 0.3)  # scripts/qwen2_5_vl.sh
QWEN3_SCRIPT = FamilyDefaults("attn_div", 4, 28, 36, 0.1)  # scripts/qwen3_vl.sh
LLAVA_SCRIPT = FamilyDefaults("attn_div_v2", 8, 20, 28, 0.3)  # scripts/llava_ov.sh = flashvid()'s defaults
FAMILY_DEFAULTS = {"qwen2_vl": QWEN25_SCRIPT, "qwen2_5_vl": QWEN25_SCRIPT, "qwen3_vl": QWEN3_SCRIPT,
                   "qwen3_5": QWEN3_SCRIPT}


def family_defaults(model: nn.Module) -> FamilyDefaults:
    """The script settings for the model's family (by config.model_type; LLaVA-OneVision's for the others)."""
    return FAMILY_DEFAULTS.get(getattr(getattr(model, "config", None), "model_type", None), LLAVA_SCRIPT)


def resolved(config: FlashVIDConfig, defaults: FamilyDefaults) -> FlashVIDConfig:
    """The config with its None fields (but pruning_layer) taken from the family's defaults."""
    return replace(config, selection=config.selection or defaults.selection,
                   min_segments=config.min_segments or defaults.min_segments,
                   llm_retention_ratio=(defaults.llm_retention_ratio if config.llm_retention_ratio is None
                                        else config.llm_retention_ratio))


# ---- budget -------------------------------------------------------------------------------------------------
def matched_frame_counts(frames: int, patches: int, retention: float, alpha: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected [T], context [T]): round(retention T P) tokens apportioned over the frames (at least one a frame),
    ceil(alpha k_f) of a frame's k_f selected."""
    kept = frame_budgets(torch.ones(frames), patches, round(retention * frames * patches))  # [T]
    selected = torch.minimum(torch.ceil(torch.round(kept.double() * alpha, decimals=9)).long(), kept)
    return selected, kept - selected


def authors_frame_counts(frames: int, patches: int, retention: float, expansion: float, alpha: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected [T], context [T]) by the authors' floating-point arithmetic: b = ceil(P R e) (at most P),
    s = ceil(b alpha), c = b - s in every frame."""
    per_frame = min(math.ceil(patches * retention * expansion), patches)
    selected = math.ceil(per_frame * alpha)
    return torch.full((frames,), selected, dtype=torch.long), torch.full((frames,), per_frame - selected)


def matched_split(budget: float, num_layers: int, point: int | None, ratio: float) -> float:
    """R_o: the outer retention with R_o (K + (L - K) r) / L = budget, at most 1 (budget itself without point K)."""
    if point is None:
        return budget
    return min(budget * num_layers / (point + (num_layers - point) * ratio), 1.0)


def matched_inner_count(budget: float, num_layers: int, point: int, total: int, alive: int) -> int:
    """m: the tokens of a video (N_v = total, M = alive after the outer stage) kept at point K so that
    (K M + (L - K) m) / (L N_v) is the budget, within [1, M]."""
    m = round((budget * num_layers * total - point * alive) / (num_layers - point))
    return min(max(m, 1), alive)


def pruning_point(stack, config: FlashVIDConfig, defaults: FamilyDefaults, rule: str) -> int | None:
    """K as a reduction point: the given pruning_layer, else the family's (scaled to the depth for "matched");
    None where the decoder has no attention layer at or after it (authors: no layer K at all)."""
    layer = config.pruning_layer
    if layer is None:
        layer = defaults.layer if rule == "authors" else max(1, round(stack.num_layers * defaults.layer
                                                                      / defaults.depth))
    if layer >= stack.num_layers:
        return None
    return stack.attention_point_from(layer)


# ---- the inner prune ----------------------------------------------------------------------------------------
def inner_prune(layout, attention, counts: list[int]) -> torch.Tensor:
    """keep [n] bool over the alive video tokens: per video v, the counts[v] the last prompt row attends to most."""
    positions = layout.positions.to(attention.keys.device)
    importance = attention_importance(attention.queries, attention.keys, attention.scaling)[positions]  # [n]
    keep = torch.zeros(positions.numel(), dtype=torch.bool, device=positions.device)
    for video, (start, end) in enumerate(per_video(layout)):
        if end > start:
            keep[start:end] = keep_most_important(importance[start:end], counts[video], positions[start:end])
    return keep


def inner_counts(layout, rule: str, budget: float, num_layers: int, point: int, ratio: float) -> list[int]:
    """Per video: the tokens kept at point K, from its alive tokens (layout) and its grid's N_v."""
    alive = torch.bincount(layout.video.cpu(), minlength=layout.num_videos).tolist()
    if rule == "authors":
        return [math.ceil(m * ratio) for m in alive]
    return [matched_inner_count(budget, num_layers, point, grid.frames * grid.tokens_per_frame, m)
            for grid, m in zip(layout.grids, alive)]


# ---- install --------------------------------------------------------------------------------------------------
def apply_flashvid(model: nn.Module, budget: float = 0.3, saliency: str = "attention", budget_rule: str = "matched",
                   **hyperparameters) -> nn.Module:
    """Install FlashVID in place: merging before the LLM, one prune inside it, at the budget (budget_rule "matched":
    the mean over layers of kept video tokens; "authors": their retention arithmetic and absolute layer).

    saliency: "attention" (vision encoder) or "norm" (feature norm); hyperparameters: FlashVIDConfig's fields."""
    check_budget(budget)
    check_budget_rule(budget_rule)
    check_saliency(saliency)
    defaults = family_defaults(model)
    config = resolved(FlashVIDConfig(**hyperparameters), defaults)
    authors = budget_rule == "authors"
    tree_weights = config.tree_weights or ("authors" if authors else "mean")

    def build(patches: PatchStack):
        score = saliency_source(model, "flashvid", saliency, patches) if config.selection != "div" else None
        return lambda layout, stack, device: make_reducer(layout, stack, device, score)

    def make_reducer(layout, stack, device, score):
        num_layers = stack.num_layers
        point = pruning_point(stack, config, defaults, budget_rule)
        ratio = config.llm_retention_ratio
        outer = budget if authors else matched_split(budget, num_layers, point, ratio)

        def video_fn(features: torch.Tensor, retention: float, rank: torch.Tensor | None = None) -> Selection:
            frames, patches, _ = features.shape
            if authors:
                selected, context = authors_frame_counts(frames, patches, retention, config.expansion, config.alpha)
            else:
                selected, context = matched_frame_counts(frames, patches, retention, config.alpha)
            return flashvid_video(features, rank, selected, context, selection=config.selection,
                                  temporal_threshold=config.temporal_threshold,
                                  segment_threshold=config.segment_threshold, min_segments=config.min_segments,
                                  exact=not authors, tree_weights=tree_weights)

        stages = [Stage(0, lambda lay, hidden, _attention: keep_per_video(
            lay, hidden, outer, video_fn, score(hidden) if score is not None else None))]
        if point is not None and (not authors or ratio < 1):
            stages.append(Stage(point, lambda lay, hidden, attention: inner_prune(
                lay, attention, inner_counts(lay, budget_rule, budget, num_layers, point, ratio)),
                needs_attention=True))
        return StagedReduction(layout, num_layers, device, "flashvid", stages)

    description = (f"FlashVID(budget={budget}, budget_rule={budget_rule}, saliency={saliency}, "
                   f"selection={config.selection}, tree_weights={tree_weights})")
    return install_method(model, description, build)
