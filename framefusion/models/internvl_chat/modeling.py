"""InternVL2 / 2.5 (remote-code InternVLChatModel) built from transformers' own modules.

- vision: transformers' InternVLVisionModel is InternViT (fused qkv split into q/k/v, layer scale, optional q/k
  RMS norm, no final norm); the CLS token is dropped, the patch grid pixel-shuffled (downsample_ratio 0.5: each 2x2
  block of patches becomes one token of 4x the width), then the MLP projector (LayerNorm, Linear, GELU, Linear:
  transformers' InternVLMultiModalProjector).
- LLM: LlamaModel (InternLM2, Llama) or Qwen2Model, with its own lm_head.

Inputs: the prompt's `<IMG_CONTEXT>` placeholders are already expanded (image_seq_length per tile); image tiles come
as `pixel_values`, video frames (one tile each) as `pixel_values_videos`, and `vision_blocks` [n_blocks, 2] says, for
every `<img>...</img>` block in text order, which video it is a frame of (-1: an image) and how many tiles it holds.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, InternVLVisionModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector

from framefusion.models.internvl_chat.config import InternVLChatConfig

# transformers 5.24 renamed the cache field of model outputs from past_key_values to cache
_CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"


def pixel_shuffle(features: torch.Tensor, ratio: float, version: str = "v2") -> torch.Tensor:
    """[n, side, side, C] patch grid (rows, cols) -> [n, side * ratio, side * ratio, C / ratio^2].

    InternVL's pixel shuffle: with ratio 0.5 output token (i, j) concatenates the patches (2i, 2j), (2i, 2j+1),
    (2i+1, 2j), (2i+1, 2j+1) (row offset outer). "v1" leaves the output grid transposed (the original code warns
    about it); "v2", InternVL2 and 2.5's, has it in row-major order.
    """
    n, rows, cols, width = features.shape
    step = round(1 / ratio)
    out_rows, out_cols = rows // step, cols // step
    # [n, rows, cols, C] -> [n, out_rows, step (row offset), out_cols, step (col offset), C]
    grid = features.reshape(n, out_rows, step, out_cols, step, width)
    order = (0, 3, 1, 2, 4, 5) if version == "v1" else (0, 1, 3, 2, 4, 5)  # grid axes, then row and col offsets
    tokens = grid.permute(*order)
    return tokens.reshape(n, tokens.shape[1], tokens.shape[2], step * step * width)


class InternVLChatPreTrainedModel(PreTrainedModel):
    """Shared settings of the native InternVL2 / 2.5 classes."""

    config_class = InternVLChatConfig
    config: InternVLChatConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = False
    _no_split_modules = ["InternVLVisionLayer", "LlamaDecoderLayer", "Qwen2DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True


class InternVLChatModel(InternVLChatPreTrainedModel):
    """Vision tower, projector and LLM decoder (no LM head): the multimodal module the adapters hook."""

    def __init__(self, config: InternVLChatConfig):
        super().__init__(config)
        self.vision_tower = InternVLVisionModel(config.vision_config)
        self.multi_modal_projector = InternVLMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def tile_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n, 3, S, S] tiles -> [n, image_seq_length, D_llm] LLM-ready features."""
        layer = self.config.vision_feature_layer
        output = self.vision_tower(pixel_values=pixel_values.to(self.vision_tower.dtype),
                                   output_hidden_states=layer != -1)
        patches = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
        patches = patches[:, 1:]  # drop CLS: [n, side * side, C]
        side = round(patches.shape[1] ** 0.5)
        grid = patches.reshape(patches.shape[0], side, side, -1)
        tokens = pixel_shuffle(grid, self.config.downsample_ratio, self.config.ps_version)  # [n, s', s', 4C]
        return self.multi_modal_projector(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]))

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Image tiles [n, 3, S, S] -> features [n, image_seq_length, D_llm]."""
        return self.tile_features(pixel_values)

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Video frames [n, 3, S, S] (one tile each) -> features [n, image_seq_length, D_llm]."""
        return self.tile_features(pixel_values_videos)

    def placeholder_features(self, pixel_values: torch.Tensor | None, pixel_values_videos: torch.Tensor | None,
                             vision_blocks: torch.Tensor | None) -> torch.Tensor:
        """Features of every `<IMG_CONTEXT>` token in text order: [n_placeholders, D_llm]."""
        images = self.get_image_features(pixel_values) if pixel_values is not None else None
        videos = self.get_video_features(pixel_values_videos) if pixel_values_videos is not None else None
        if vision_blocks is None:  # no block table: images only, in order
            if videos is not None:
                raise ValueError("pixel_values_videos need vision_blocks (which blocks of the prompt are video frames)")
            return images.flatten(0, 1)
        parts, next_image, next_frame = [], 0, 0
        for video, tiles in vision_blocks.tolist():  # a loop over <img> blocks, not tokens
            if video < 0:
                parts.append(images[next_image:next_image + tiles])
                next_image += tiles
            else:
                parts.append(videos[next_frame:next_frame + tiles])
                next_frame += tiles
        return torch.cat(parts).flatten(0, 1)

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, vision_blocks: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> BaseModelOutputWithPast:
        """Embed the prompt, put the vision features at its placeholders and run the LLM decoder."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        has_pixels = pixel_values is not None or pixel_values_videos is not None
        if has_pixels and input_ids is not None:
            slots = input_ids == self.config.image_token_id  # [B, N]
            count = int(slots.sum())
            if count:  # none on decode steps, where generate may still pass the pixels along
                features = self.placeholder_features(pixel_values, pixel_values_videos, vision_blocks)
                if features.shape[0] != count:
                    raise ValueError(f"the prompt has {count} <IMG_CONTEXT> tokens but the pixels give "
                                     f"{features.shape[0]} features")
                mask = slots.unsqueeze(-1).expand_as(inputs_embeds)
                inputs_embeds = inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, **kwargs)


class InternVLChatForConditionalGeneration(InternVLChatPreTrainedModel, GenerationMixin):
    """InternVL2 / 2.5 with its LM head, `generate`-ready (KV cache, greedy or sampled decoding)."""

    def __init__(self, config: InternVLChatConfig):
        super().__init__(config)
        self.model = InternVLChatModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Image tiles [n, 3, S, S] -> features [n, image_seq_length, D_llm]."""
        return self.model.get_image_features(pixel_values)

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, vision_blocks: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
                inputs_embeds: torch.Tensor | None = None, logits_to_keep: int | torch.Tensor = 0,
                labels: torch.LongTensor | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """Logits for the prompt (the last `logits_to_keep` positions; 0: all) and the KV cache."""
        kwargs.pop("return_dict", None)
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, pixel_values_videos=pixel_values_videos,
                             vision_blocks=vision_blocks, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, **kwargs)
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions,
                                      **{_CACHE_FIELD: getattr(outputs, _CACHE_FIELD, None)})
