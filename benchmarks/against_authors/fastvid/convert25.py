"""Convert a transformers-5.x Qwen2.5-VL checkpoint into the transformers-4.51 layout (run in the oracle venv).

    python convert25.py SRC_DIR DST_DIR

As ../convert.py does for Qwen2-VL: the decoder fields move from `text_config` to the top level, `rope_parameters`
becomes `rope_theta` + `rope_scaling = {type: mrope, mrope_section}`, the vision fields are copied (Qwen2.5-VL's
window_size, fullatt_block_indexes, out_hidden_size, intermediate_size, tokens_per_second included), and the
weights are renamed model.language_model.* -> model.*, model.visual.* -> visual.*. An unknown config key is an
error; the loaded 4.51 model must hold every tensor unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
             "use_cache", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
             "bos_token_id", "eos_token_id", "pad_token_id")
TEXT_IGNORED = {"layer_types", "model_type", "dtype", "tie_word_embeddings", "rope_parameters"}
VISION_KEYS = ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels", "patch_size",
               "spatial_merge_size", "temporal_patch_size", "window_size", "fullatt_block_indexes", "out_hidden_size",
               "tokens_per_second")
VISION_IGNORED = {"model_type", "dtype", "initializer_range", "rope_parameters"}
TOP_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "tie_word_embeddings")
TOP_IGNORED = {"architectures", "model_type", "dtype", "transformers_version", "text_config", "vision_config"}


def convert_config(cfg: dict) -> dict:
    """The 4.51 config dict of a 5.x Qwen2.5-VL config dict."""
    text, vision = cfg["text_config"], cfg["vision_config"]
    for part, known, ignored in ((text, TEXT_KEYS, TEXT_IGNORED), (vision, VISION_KEYS, VISION_IGNORED),
                                 (cfg, TOP_KEYS, TOP_IGNORED)):
        unknown = set(part) - set(known) - ignored
        if unknown:
            raise SystemExit(f"convert25.py: unhandled 5.x config keys {sorted(unknown)}")
    assert set(text.get("layer_types", ["full_attention"])) == {"full_attention"}
    rope = text["rope_parameters"]
    assert rope.get("rope_type", "default") == "default" and set(rope) <= {"rope_type", "rope_theta", "mrope_section"}
    assert float(vision.get("rope_parameters", {}).get("rope_theta", 10000.0)) == 10000.0
    out = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
           "torch_dtype": "float32"}
    out.update({k: text[k] for k in TEXT_KEYS if k in text})
    out["rope_theta"] = rope["rope_theta"]
    out["rope_scaling"] = {"type": "mrope", "mrope_section": list(rope["mrope_section"])}
    out.update({k: cfg[k] for k in TOP_KEYS if k in cfg})
    out["vision_config"] = {k: vision[k] for k in VISION_KEYS if k in vision}
    return out


def convert_name(name: str) -> str:
    """4.51 weight name of a 5.x one."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("model.visual."):
        return "visual." + name[len("model.visual."):]
    return name


def convert(src: Path, dst: Path) -> None:
    """Write DST (config, weights, generation config) and check that 4.51 loads every tensor unchanged."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(convert_config(json.loads((src / "config.json").read_text())),
                                                indent=2))
    if (src / "generation_config.json").is_file():
        (dst / "generation_config.json").write_text((src / "generation_config.json").read_text())
    weights = {convert_name(k): v.contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(dst), torch_dtype=torch.float32, output_loading_info=True)
    if any(info.values()):
        raise SystemExit(f"convert25.py: loading info not clean: {info}")
    state = model.state_dict()
    if set(state) != set(weights) or any(not torch.equal(state[k], v) for k, v in weights.items()):
        raise SystemExit("convert25.py: the loaded 4.51 model does not hold the converted tensors")
    print(f"convert25.py: {len(weights)} tensors, all equal after loading with transformers 4.51")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
