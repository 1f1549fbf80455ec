"""Tiny random NVILA checkpoints in VILA's published layout, for the three published NVILA checkpoints' shapes.

A checkpoint is written as VILA's `save_pretrained` writes it: a top-level config.json (`LlavaLlamaModel`,
model_type `llava_llama`, the parts' configs as dicts and the media settings), `llm/` (a Qwen2 causal LM, its
tokenizer with VILA's media tokens and the chat template), `vision_tower/` (a SigLIP vision model and its
image-processor config) and `mm_projector/` (the projector's weights under their published names). The configs
are written in the published (transformers 4.46) form, so VILA's own code reads the same files.

Layouts (what differs between the three published checkpoints):

| variant | projector | video encoder | LLM |
| --- | --- | --- | --- |
| `nvila-lite-2b` | mlp_downsample_3x3_fix | Basic: every frame, then "\\n" | Qwen2 (1.5B shape: tied embeddings) |
| `nvila-8b-video` | mlp_downsample_2x2_fix | TSP, pool_sizes [[8, 1, 1]]: 8 frames averaged, then "\\n"; 100 time tokens | Qwen2 (7B shape) |
| `nvila-lite-15b-video` | mlp_downsample_3x3_fix | Basic (assumed: the published config.json was not readable here) | Qwen2 (Qwen2.5-14B shape: rms_norm_eps 1e-5) |

The tiny SigLIP tower takes 112 px tiles of 14 px patches (8 x 8 patches): 2 x 2 fusion gives 4 x 4 = 16 tokens per
frame (17 with the "\\n" of each group of 8 frames, the analogue of the real 256 + 1), 3 x 3 fusion 3 x 3 = 9.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from framefusion.models.nvila import load
from framefusion.models.nvila.config import IMAGE_TOKEN, SENTINEL_TOKEN, VIDEO_TOKEN
from framefusion.models.nvila.projector import NVILAProjector
from framefusion.models.nvila.weights import write_state_dict
from framefusion.tiny.tokenizer import build_tokenizer

VARIANTS = ("nvila-lite-2b", "nvila-8b-video", "nvila-lite-15b-video")
TILE = 112  # tiny tile side (the real ones: 448)
PATCH = 14
TSP = {"_target_": "llava.model.encoders.TSPVideoEncoder", "pool_sizes": [[8, 1, 1]]}
BASIC_VIDEO = {"_target_": "llava.model.encoders.BasicVideoEncoder"}
BASIC_IMAGE = {"_target_": "llava.model.encoders.BasicImageEncoder"}
# A string-content Qwen2-Instruct chat template (VILA renders messages whose content is one string).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LAYOUTS = {  # variant -> (projector, video encoder, time tokens, tied embeddings, rms_norm_eps)
    "nvila-lite-2b": ("mlp_downsample_3x3_fix", BASIC_VIDEO, 0, True, 1e-6),
    "nvila-8b-video": ("mlp_downsample_2x2_fix", TSP, 100, False, 1e-6),
    "nvila-lite-15b-video": ("mlp_downsample_3x3_fix", BASIC_VIDEO, 0, False, 1e-5),
}


def nvila_tokenizer(time_tokens: int = 0) -> PreTrainedTokenizerFast:
    """The tiny Qwen-style BPE with VILA's tokens: the sentinel and media tokens (special), then time tokens."""
    tokenizer = build_tokenizer(family="qwen2_vl")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.add_tokens([SENTINEL_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN], special_tokens=True)
    if time_tokens:
        tokenizer.add_tokens([f"<t{t}>" for t in range(time_tokens)])
    return tokenizer


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """tokenizer.json plus a tokenizer_config.json both transformers 4.46 (VILA's) and 5.x read."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str())
    specials = [t for t in tokenizer.all_special_tokens if t not in (tokenizer.eos_token, tokenizer.pad_token)]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": tokenizer.eos_token,
              "pad_token": tokenizer.pad_token, "unk_token": None, "model_max_length": 32768,
              "additional_special_tokens": specials, "clean_up_tokenization_spaces": False,
              "chat_template": tokenizer.chat_template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def save_tiny_checkpoint(path: str | Path, variant: str = "nvila-8b-video", *, num_layers: int = 4,
                         hidden_size: int = 64, num_heads: int = 4, num_kv_heads: int = 2,
                         intermediate_size: int = 128, vision_layers: int = 2, vision_width: int = 32,
                         seed: int = 0, **settings: Any) -> Path:
    """Write a tiny random `variant` checkpoint in the published layout; `settings` override top-level config.json
    keys (e.g. dynamic_s2=True, image_aspect_ratio="dynamic_s2", video_encoder={...})."""
    if variant not in _LAYOUTS:
        raise ValueError(f"unknown NVILA variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    projector_type, video_encoder, time_tokens, tied, eps = _LAYOUTS[variant]
    path = Path(path)
    tokenizer = nvila_tokenizer(time_tokens)
    torch.manual_seed(seed)
    llm_dict = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"), "eos_token_id": tokenizer.eos_token_id,
        "hidden_act": "silu", "hidden_size": hidden_size, "initializer_range": 0.02,
        "intermediate_size": intermediate_size, "max_position_embeddings": 32768, "max_window_layers": num_layers,
        "num_attention_heads": num_heads, "num_hidden_layers": num_layers, "num_key_value_heads": num_kv_heads,
        "rms_norm_eps": eps, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": tied, "torch_dtype": "float32", "transformers_version": "4.46.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": len(tokenizer),
    }
    vision_dict = {
        "architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh", "hidden_size": vision_width, "image_size": TILE,
        "intermediate_size": 2 * vision_width, "layer_norm_eps": 1e-6, "num_attention_heads": 2, "num_channels": 3,
        "num_hidden_layers": vision_layers, "patch_size": PATCH, "torch_dtype": "float32",
        "transformers_version": "4.46.0", "vision_use_head": False,
    }
    top = {
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "_name_or_path": str(path),
        "resume_path": str(path), "hidden_size": hidden_size, "mm_hidden_size": vision_width,
        "image_aspect_ratio": "dynamic" if variant.startswith("nvila-lite") else "resize",
        "num_video_frames": 8, "fps": 0.0, "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_projector": projector_type,
        "vision_tower": "Efficient-Large-Model/paligemma-siglip-so400m-patch14-448", "vision_resolution": -1,
        "interpolate_mode": "linear", "s2": False, "dynamic_s2": False,
        "s2_scales": f"{TILE},{2 * TILE},{3 * TILE}", "s2_max_split_size": TILE, "s2_resize_output_to_scale_idx": -1,
        "min_tiles": 1, "max_tiles": 12, "num_time_tokens": time_tokens, "time_token_format": "<t{t}>",
        "time_token_ids": tokenizer.convert_tokens_to_ids([f"<t{t}>" for t in range(time_tokens)]),
        "soft_ce_std": 1.0, "image_encoder": BASIC_IMAGE, "video_encoder": video_encoder, "chat_template": None,
        "model_dtype": "torch.float32", "tune_language_model": True, "tune_vision_tower": True,
        "tune_mm_projector": True, "transformers_version": "4.46.0",
    }
    top.update(settings)
    top["llm_cfg"], top["vision_tower_cfg"] = llm_dict, vision_dict
    scales = [int(s) for s in str(top["s2_scales"]).split(",")]
    mm_hidden = vision_width * (len(scales) if top["dynamic_s2"] else 1)
    top["mm_hidden_size"] = mm_hidden
    top["mm_projector_cfg"] = {"architectures": ["MultimodalProjector"], "mm_projector_type": projector_type,
                               "model_type": "v2l_projector", "torch_dtype": "float32",
                               "transformers_version": "4.46.0"}
    tile = scales[0] if top["dynamic_s2"] else TILE
    preprocessor = {"do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
                    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
                    "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": 3,
                    "rescale_factor": 0.00392156862745098, "size": {"height": tile, "width": tile}}

    llm = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in llm_dict.items() if k != "architectures"}))
    state = llm.state_dict()
    if tied:
        state.pop("lm_head.weight")
    write_state_dict(path / "llm", state)
    _write_json(path / "llm" / "config.json", llm_dict)
    _write_json(path / "llm" / "generation_config.json", {"bos_token_id": llm_dict["bos_token_id"],
                                                          "eos_token_id": llm_dict["eos_token_id"]})
    _save_tokenizer(tokenizer, path / "llm")
    tower = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in vision_dict.items() if k != "architectures"}))
    write_state_dict(path / "vision_tower", {name if name.startswith("vision_model.") else f"vision_model.{name}": value
                                             for name, value in tower.state_dict().items()})  # published names
    _write_json(path / "vision_tower" / "config.json", vision_dict)
    _write_json(path / "vision_tower" / "preprocessor_config.json", preprocessor)
    projector = NVILAProjector(projector_type, mm_hidden, hidden_size)
    with torch.no_grad():  # wider than the HF default init, so that the features reach the LLM visibly
        for module in projector.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.2)
                module.bias.normal_(0.0, 0.02)
    write_state_dict(path / "mm_projector", projector.state_dict())
    _write_json(path / "mm_projector" / "config.json", top["mm_projector_cfg"])
    _write_json(path / "config.json", top)
    return path


def build_tiny_model(path: str | Path, variant: str = "nvila-8b-video", *, dtype: torch.dtype = torch.float32,
                     attn_implementation: str = "sdpa", **kw: Any):
    """Write a tiny `variant` checkpoint at `path` and load it natively: (model, processor)."""
    save_tiny_checkpoint(path, variant, **kw)
    return load(Path(path), dtype=dtype, attn_implementation=attn_implementation, model_args={})
