"""The original InternVLChatModel weight names and layouts <-> the native modules' (both directions).

Original names (remote code):
  vision_model.embeddings.{class_embedding, patch_embedding.*, position_embedding}
  vision_model.encoder.layers.L.{attn.qkv, attn.q_norm, attn.k_norm, attn.proj, mlp.fc1, mlp.fc2, norm1, norm2,
      ls1, ls2}
  mlp1.{0 LayerNorm, 1 Linear, 3 Linear}
  language_model.model.{tok_embeddings, layers.L.attention.{wqkv, wo}, layers.L.feed_forward.{w1, w3, w2},
      layers.L.{attention_norm, ffn_norm}, norm}, language_model.output                        (InternLM2)
  language_model.model.{embed_tokens, layers.L.self_attn.*, layers.L.mlp.*, ...}, language_model.lm_head  (Qwen2/Llama)
InternViT's fused qkv rows are [q; k; v]. InternLM2's fused wqkv rows view as [kv_heads, groups + 2, head_dim]: for
each key/value head its `groups` query heads, then its key head, then its value head.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from framefusion.models.internvl_chat.config import INTERNLM2, InternVLChatConfig

VISION = "model.vision_tower."
LLM = "model.language_model."

# (original, native) name templates of tensors that only change name; {x} is one name part, {rest} any tail
_VISION_RENAMES = (
    ("vision_model.embeddings.class_embedding", VISION + "embeddings.cls_token"),
    ("vision_model.embeddings.patch_embedding.{p}", VISION + "embeddings.patch_embeddings.projection.{p}"),
    ("vision_model.embeddings.position_embedding", VISION + "embeddings.position_embeddings"),
    ("vision_model.encoder.layers.{i}.attn.proj.{p}", VISION + "encoder.layer.{i}.attention.projection_layer.{p}"),
    ("vision_model.encoder.layers.{i}.attn.q_norm.weight", VISION + "encoder.layer.{i}.attention.q_norm.weight"),
    ("vision_model.encoder.layers.{i}.attn.k_norm.weight", VISION + "encoder.layer.{i}.attention.k_norm.weight"),
    ("vision_model.encoder.layers.{i}.mlp.fc1.{p}", VISION + "encoder.layer.{i}.mlp.fc1.{p}"),
    ("vision_model.encoder.layers.{i}.mlp.fc2.{p}", VISION + "encoder.layer.{i}.mlp.fc2.{p}"),
    ("vision_model.encoder.layers.{i}.norm1.{p}", VISION + "encoder.layer.{i}.layernorm_before.{p}"),
    ("vision_model.encoder.layers.{i}.norm2.{p}", VISION + "encoder.layer.{i}.layernorm_after.{p}"),
    ("vision_model.encoder.layers.{i}.ls1", VISION + "encoder.layer.{i}.lambda_1"),
    ("vision_model.encoder.layers.{i}.ls2", VISION + "encoder.layer.{i}.lambda_2"),
    ("mlp1.0.{p}", "model.multi_modal_projector.layer_norm.{p}"),
    ("mlp1.1.{p}", "model.multi_modal_projector.linear_1.{p}"),
    ("mlp1.3.{p}", "model.multi_modal_projector.linear_2.{p}"),
)
_INTERNLM2_RENAMES = (
    ("language_model.model.tok_embeddings.weight", LLM + "embed_tokens.weight"),
    ("language_model.model.layers.{i}.attention.wo.{p}", LLM + "layers.{i}.self_attn.o_proj.{p}"),
    ("language_model.model.layers.{i}.feed_forward.w1.weight", LLM + "layers.{i}.mlp.gate_proj.weight"),
    ("language_model.model.layers.{i}.feed_forward.w3.weight", LLM + "layers.{i}.mlp.up_proj.weight"),
    ("language_model.model.layers.{i}.feed_forward.w2.weight", LLM + "layers.{i}.mlp.down_proj.weight"),
    ("language_model.model.layers.{i}.attention_norm.weight", LLM + "layers.{i}.input_layernorm.weight"),
    ("language_model.model.layers.{i}.ffn_norm.weight", LLM + "layers.{i}.post_attention_layernorm.weight"),
    ("language_model.model.norm.weight", LLM + "norm.weight"),
    ("language_model.output.weight", "lm_head.weight"),
)
_HF_LLM_RENAMES = (  # Qwen2 / Llama inside InternVL keep transformers' own names under language_model.
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("language_model.model.{rest}", LLM + "{rest}"),
)
_VISION_QKV = ("vision_model.encoder.layers.{i}.attn.qkv.{p}", VISION + "encoder.layer.{i}.attention.{x}_proj.{p}")
_WQKV = ("language_model.model.layers.{i}.attention.wqkv.{p}", LLM + "layers.{i}.self_attn.{x}_proj.{p}")


@functools.lru_cache(maxsize=None)
def _regex(template: str) -> re.Pattern:
    """A template's full-match regex: {rest} any tail, any other {name} one dotted part."""
    parts = re.split(r"(\{\w+\})", template)
    pattern = "".join(f"(?P<{p[1:-1]}>.+)" if p == "{rest}" else f"(?P<{p[1:-1]}>[^.]+)" if p.startswith("{")
                      else re.escape(p) for p in parts)
    return re.compile(pattern + "$")


def _translate(name: str, pairs, source: int) -> str | None:
    """Rename by the first (original, native) pair whose side `source` (0 original, 1 native) matches `name`."""
    for pair in pairs:
        match = _regex(pair[source]).match(name)
        if match:
            return pair[1 - source].format(**match.groupdict())
    return None


class WeightError(KeyError):
    """Checkpoint tensors that do not match the model the config describes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def split_wqkv(fused: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """InternLM2's fused wqkv weight [(H + 2 H_kv) d, D] (or bias [(H + 2 H_kv) d]) -> q [H d, ...], k, v [H_kv d, ...].

    Query head h = kv * groups + g reads the key/value head kv, as grouped-query attention repeats each key head over
    `groups` consecutive query heads.
    """
    groups = heads // kv_heads
    rest = fused.shape[1:]
    blocks = fused.reshape(kv_heads, groups + 2, head_dim, *rest)  # [H_kv, G + 2, d, ...]
    q = blocks[:, :groups].reshape(heads * head_dim, *rest)
    k = blocks[:, groups].reshape(kv_heads * head_dim, *rest)
    v = blocks[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int,
              head_dim: int) -> torch.Tensor:
    """The inverse of split_wqkv."""
    groups = heads // kv_heads
    rest = q.shape[1:]
    blocks = torch.cat([q.reshape(kv_heads, groups, head_dim, *rest), k.reshape(kv_heads, 1, head_dim, *rest),
                        v.reshape(kv_heads, 1, head_dim, *rest)], dim=1)  # [H_kv, G + 2, d, ...]
    return blocks.reshape(-1, *rest).contiguous()


def _renames(config: InternVLChatConfig):
    return _VISION_RENAMES + (_INTERNLM2_RENAMES if config.llm_architecture == INTERNLM2 else _HF_LLM_RENAMES)


def to_native(name: str, tensor: torch.Tensor, config: InternVLChatConfig) -> dict[str, torch.Tensor]:
    """The native tensors one original tensor becomes (a WeightError for a name the format does not have)."""
    text = config.text_config
    for fused, split in ((_VISION_QKV, lambda t: t.chunk(3, dim=0)),
                         (_WQKV, lambda t: split_wqkv(t, text.num_attention_heads, text.num_key_value_heads,
                                                      text.head_dim))):
        if fused is _WQKV and config.llm_architecture != INTERNLM2:
            continue
        match = _regex(fused[0]).match(name)
        if match:
            return {fused[1].format(x=x, **match.groupdict()): part for x, part in zip("qkv", split(tensor))}
    native = _translate(name, _renames(config), 0)
    if native is None:
        raise WeightError(f"unexpected tensor {name!r} for an InternVL checkpoint with a {config.llm_architecture} LLM")
    return {native: tensor}


def to_original(state: dict[str, torch.Tensor], config: InternVLChatConfig) -> dict[str, torch.Tensor]:
    """The native state dict under the original names and layouts (what the remote-code model saves)."""
    text = config.text_config
    fused_pairs = [(_VISION_QKV, lambda q, k, v: torch.cat([q, k, v]))]
    if config.llm_architecture == INTERNLM2:
        fused_pairs.append((_WQKV, lambda q, k, v: fuse_wqkv(q, k, v, text.num_attention_heads,
                                                             text.num_key_value_heads, text.head_dim)))
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        matches = [(fused, join, m) for fused, join in fused_pairs if (m := _regex(fused[1]).match(name))
                   and m["x"] in ("q", "k", "v")]
        if matches:
            fused, join, match = matches[0]
            parts = match.groupdict()
            if parts.pop("x") == "q":  # k and v join the fused tensor with q
                out[fused[0].format(**parts)] = join(*(state[fused[1].format(x=x, **parts)] for x in "qkv"))
            continue
        original = _translate(name, _renames(config), 1)
        if original is None:
            raise WeightError(f"no original name for native tensor {name!r}")
        out[original] = tensor
    return out


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: safetensors (sharded via the index, or one file) or .bin."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def iter_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(original name, tensor) of every tensor in the checkpoint, shard by shard."""
    for path in checkpoint_files(folder):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        else:
            yield from torch.load(path, map_location="cpu", weights_only=True).items()
