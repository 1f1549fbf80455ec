"""Convert a transformers-5.x Qwen2-VL checkpoint (config + weights) into the transformers-4.51 layout.

Run in the authors' venv (transformers 4.51.3):  python convert.py SRC_DIR DST_DIR

Config: 5.x nests the decoder fields under `text_config` and keeps rotary settings in
`rope_parameters = {rope_type, rope_theta, mrope_section}`; 4.51 wants them flat on the top-level
config with `rope_theta` and `rope_scaling = {"type": "mrope", "mrope_section": [...]}`.
Every 5.x key is either mapped or listed in IGNORED with the reason; an unknown key is an error.

Weights: 5.x names `model.language_model.*` -> 4.51 `model.*`, `model.visual.*` -> `visual.*`,
`lm_head.*` unchanged (transformers 5.24 already writes the legacy names on save; both are accepted).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TEXT_KEYS = (  # copied verbatim from text_config to the 4.51 top level
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
    "bos_token_id", "eos_token_id", "pad_token_id",
)
TEXT_IGNORED = {
    "layer_types": "all 'full_attention' (checked); 4.51 has no such field, use_sliding_window=False there",
    "model_type": "qwen2_vl_text sub-config type; 4.51 has no text sub-config",
    "dtype": "4.51 calls it torch_dtype (set at top level)",
    "tie_word_embeddings": "copied to the top level (checked equal)",
    "rope_parameters": "mapped to rope_theta + rope_scaling",
}
VISION_KEYS = ("depth", "embed_dim", "hidden_size", "hidden_act", "mlp_ratio", "num_heads", "in_channels",
               "patch_size", "spatial_merge_size", "temporal_patch_size")
VISION_IGNORED = {
    "model_type": "4.51 vision config model_type is 'qwen2_vl'",
    "dtype": "4.51: torch_dtype",
    "initializer_range": "init only (weights are loaded)",
    "rope_parameters": "must be {rope_type: axial, rope_theta: 10000}: the 4.51 vision rotary hard-codes theta 10000 (checked)",
}
TOP_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "tie_word_embeddings")
TOP_IGNORED = {
    "architectures": "set to Qwen2VLForConditionalGeneration",
    "model_type": "qwen2_vl in both",
    "dtype": "4.51: torch_dtype",
    "transformers_version": "informative",
    "text_config": "flattened",
    "vision_config": "converted",
}


def convert_config(cfg: dict) -> dict:
    text, vision = cfg["text_config"], cfg["vision_config"]
    for part, known, ignored in ((text, TEXT_KEYS, TEXT_IGNORED), (vision, VISION_KEYS, VISION_IGNORED),
                                 (cfg, TOP_KEYS, TOP_IGNORED)):
        unknown = set(part) - set(known) - set(ignored)
        if unknown:
            raise SystemExit(f"convert.py: unhandled 5.x config keys {sorted(unknown)}")
    assert set(text.get("layer_types", ["full_attention"])) == {"full_attention"}, text.get("layer_types")
    assert not text.get("use_sliding_window", False)
    assert text.get("tie_word_embeddings", cfg.get("tie_word_embeddings")) == cfg.get("tie_word_embeddings")
    rope = text["rope_parameters"]
    assert rope.get("rope_type", "default") == "default", rope
    assert set(rope) <= {"rope_type", "rope_theta", "mrope_section"}, rope
    vrope = vision.get("rope_parameters", {"rope_theta": 10000.0})
    assert float(vrope.get("rope_theta", 10000.0)) == 10000.0, vrope

    out = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "torch_dtype": "float32"}
    out.update({k: text[k] for k in TEXT_KEYS if k in text})
    out["rope_theta"] = rope["rope_theta"]
    out["rope_scaling"] = {"type": "mrope", "mrope_section": list(rope["mrope_section"])}
    out.update({k: cfg[k] for k in TOP_KEYS if k in cfg})
    out["vision_config"] = {k: vision[k] for k in VISION_KEYS if k in vision}
    return out


def convert_name(name: str) -> str:
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("model.visual."):
        return "visual." + name[len("model.visual."):]
    return name  # model.*, visual.*, lm_head.* are already the 4.51 names


def convert(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(convert_config(cfg), indent=2))
    weights = load_file(str(src / "model.safetensors"))
    renamed = {convert_name(k): v.contiguous() for k, v in weights.items()}
    assert len(renamed) == len(weights), "name collision after renaming"
    save_file(renamed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    verify(dst, renamed)


def verify(dst: Path, renamed: dict) -> None:
    """Load with 4.51: no missing / unexpected / mismatched keys, and every tensor equal to the source."""
    from transformers import Qwen2VLForConditionalGeneration

    model, info = Qwen2VLForConditionalGeneration.from_pretrained(
        str(dst), torch_dtype=torch.float32, attn_implementation="sdpa", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"convert.py: loading info not clean: {bad}")
    state = model.state_dict()
    missing = sorted(set(state) - set(renamed))
    unexpected = sorted(set(renamed) - set(state))
    if missing or unexpected:
        raise SystemExit(f"convert.py: strict key check failed: missing={missing} unexpected={unexpected}")
    for k, v in renamed.items():
        if not torch.equal(state[k], v):
            raise SystemExit(f"convert.py: tensor {k} differs after loading")
    print(f"convert.py: {len(renamed)} tensors, no missing/unexpected/mismatched keys, all tensors equal; "
          f"layers={model.config.num_hidden_layers}, rope_scaling={model.config.rope_scaling}")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
