"""What both sides run: the checkpoint, the clip, the FlashVID settings (in our and in the authors' parameter
names) and the random feature sets of the pure-function comparison. Standard library only (read in both venvs)."""

from __future__ import annotations

CHECKPOINT = {"num_layers": 28, "seed": 0}  # framefusion.tiny: 64 wide, 28 layers like Qwen2.5-VL-7B's decoder
CLIP = {"frames": 16, "size": 64, "static_fraction": 0.5, "interval": 0.5}  # 8 temporal patches of 4 x 4 tokens
QUESTION = "What is happening in the video?"
NEW_TOKENS = 8

QWEN_SCRIPT = {"selection": "attn_div", "min_segments": 4}  # scripts/qwen2_5_vl.sh
FUNCTION_DEFAULTS = {"selection": "attn_div_v2", "min_segments": 8}  # flashvid()'s defaults (scripts/llava_ov.sh)
SETTINGS = {  # name: budget (the authors' retention_ratio), rule, ADTS variant and DySeg minimum
    "authors_0.10": {"budget": 0.1, "budget_rule": "authors", **QWEN_SCRIPT},
    "authors_0.25": {"budget": 0.25, "budget_rule": "authors", **QWEN_SCRIPT},
    "authors_0.10_v2": {"budget": 0.1, "budget_rule": "authors", **FUNCTION_DEFAULTS},
    "authors_0.25_v2": {"budget": 0.25, "budget_rule": "authors", **FUNCTION_DEFAULTS},
    # one segment (no cut: threshold -1, minimum 1): no one-frame segment, every merge comparable
    "authors_0.25_one_segment": {"budget": 0.25, "budget_rule": "authors", "selection": "attn_div",
                                 "min_segments": 1, "segment_threshold": -1.0},
}
FIXED = {"alpha": 0.7, "temporal_threshold": 0.8, "segment_threshold": 0.9, "expansion": 1.25, "pruning_layer": 20,
         "llm_retention_ratio": 0.3}  # the scripts' values, the same for every setting


def our_params(setting: dict) -> dict:
    """framefusion's method parameters for a setting."""
    return {"budget_rule": setting["budget_rule"], "selection": setting["selection"],
            "min_segments": setting["min_segments"], "saliency": "attention",
            **FIXED, "segment_threshold": setting.get("segment_threshold", FIXED["segment_threshold"])}


def their_kwargs(setting: dict) -> dict:
    """The keyword arguments of the authors' flashvid(model, ...) for a setting."""
    return {"retention_ratio": setting["budget"], "do_segment": True,
            "segment_threshold": setting.get("segment_threshold", FIXED["segment_threshold"]),
            "min_segment_num": setting["min_segments"], "complementary_segment": True,
            "token_selection_method": setting["selection"], "alpha": FIXED["alpha"],
            "temporal_threshold": FIXED["temporal_threshold"], "expansion": FIXED["expansion"],
            "pruning_layer": FIXED["pruning_layer"], "llm_retention_ratio": FIXED["llm_retention_ratio"]}


# pure functions (flashvid_compression, the part every family shares): features [T, P, D] and saliency [T, P]
FUNCTION_CASES = {
    f"{selection}_R{retention}_{kind}": {"selection": selection, "retention": retention, "kind": kind,
                                         "frames": 16, "patches": 49, "dim": 32, "alpha": 0.7,
                                         "temporal_threshold": 0.8, "min_segments": 4 if selection == "attn_div" else 8}
    for selection in ("attn_div", "attn_div_v2") for retention in (0.1, 0.25, 0.3)
    for kind in ("random", "static")
}


def function_inputs(case: dict):
    """Deterministic features [T, P, D] (a common component; "static": half the patches repeat with small noise
    over the whole clip) and a saliency [T, P] that sums to 1 per frame."""
    import zlib

    import torch

    g = torch.Generator().manual_seed(zlib.crc32(repr((case["selection"], case["retention"], case["kind"])).encode()))
    frames, patches, dim = case["frames"], case["patches"], case["dim"]
    x = torch.randn(frames, patches, dim, generator=g) + 0.5
    if case["kind"] == "static":
        still = torch.rand(patches, generator=g) < 0.5
        x[:, still] = x[0, still] + 0.05 * torch.randn(frames, int(still.sum()), dim, generator=g)
    saliency = torch.softmax(torch.randn(frames, patches, generator=g), dim=-1)
    return x, saliency
