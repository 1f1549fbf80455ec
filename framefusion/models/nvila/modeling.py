"""NVILA (VILA's LlavaLlamaModel) built from transformers' SigLIP vision model and decoder (Qwen2) and the projector.

`NVILAForConditionalGeneration.model` (NVILAModel) receives input_ids whose media tokens the processor has already
expanded to one placeholder per feature token (and the encoder's "\n" tokens as text), plus the pixels; it
encodes them (get_video_features / get_image_features), writes the features over the placeholders and runs the
decoder (`model.model.language_model`). Features are made as VILA makes them: SigLIP hidden states of layer
`mm_vision_select_layer`, the projector per tile, dynamic-S2 multi-scale merging for images (the tile map repeated
on every scale for video frames), and the video encoder's pooling of consecutive frames and neighbouring tokens.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel, SiglipVisionModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)

from framefusion.models.nvila.config import MediaEncoder, NVILAConfig
from framefusion.models.nvila.projector import NVILAProjector
from framefusion.models.nvila.tiling import (
    merge_chessboard,
    merge_scales,
    split_chessboard,
)

# transformers 5.24 renamed the cache argument and output field `past_key_values` -> `cache`
CACHE_NAME = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"
IMAGE_KINDS = ("single", "dynamic", "s2")  # image_grids[:, 0]


def pool_groups(features: torch.Tensor, pool: tuple[int, int, int]) -> torch.Tensor:
    """[T, s*s, D] frame tokens -> [T/t, (s/h) * (s/w), D]: means over t consecutive frames and h x w tokens."""
    frames, tokens, width = features.shape
    side = round(tokens ** 0.5)
    grid = features.view(frames, side, side, width)
    for dim, size in enumerate(pool):
        grid = grid.view(grid.shape[:dim] + (-1, size) + grid.shape[dim + 1:]).mean(dim + 1)
    return grid.flatten(1, 2)


class NVILAPreTrainedModel(PreTrainedModel):
    """Shared settings of the NVILA modules."""

    config_class = NVILAConfig
    base_model_prefix = "model"
    _no_split_modules = ("SiglipEncoderLayer", "Qwen2DecoderLayer", "LlamaDecoderLayer")
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """The projector's layers (the HF sub-models initialise their own)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class NVILAModel(NVILAPreTrainedModel):
    """SigLIP tower, projector and decoder; forward(input_ids with expanded placeholders, pixels) -> decoder output."""

    def __init__(self, config: NVILAConfig):
        super().__init__(config)
        attn = getattr(config, "_attn_implementation", None) or "sdpa"
        self.vision_tower = SiglipVisionModel._from_config(config.vision_config, attn_implementation=attn)
        self.mm_projector = NVILAProjector(config.projector_type, config.mm_hidden_size,
                                           config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config, attn_implementation=attn)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @property
    def tokens_per_side(self) -> int:
        """LLM tokens per side of one tile (one video frame) after the projector."""
        return self.mm_projector.tokens_per_side(self.config.patches_per_side)

    # ---- vision ---------------------------------------------------------------------------------------------
    def tile_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] tiles -> [N, n*n, C] SigLIP hidden states of the selected layer (all tokens for
        `cls_patch`; the first dropped for `patch`, as VILA does)."""
        tower_dtype = self.vision_tower.dtype
        output = self.vision_tower(pixel_values=pixels.to(tower_dtype), output_hidden_states=True)
        features = output.hidden_states[self.config.mm_vision_select_layer]
        if self.config.mm_vision_select_feature == "patch":
            features = features[:, 1:]
        elif self.config.mm_vision_select_feature != "cls_patch":
            raise ValueError(f"unexpected mm_vision_select_feature {self.config.mm_vision_select_feature!r}")
        return features

    def project_tiles(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] single tiles (video frames, plain images) -> [N, s*s, D] LLM embeddings."""
        features = self.tile_features(pixels)
        if self.config.dynamic_s2:  # one scale only: the tile's map on every scale's channels
            features = features.repeat(1, 1, len(self.config.s2_scales))
        return self.mm_projector(features)

    def get_video_features(self, pixel_values_videos: torch.Tensor, video_grids: torch.Tensor | None = None,
                           **_: Any) -> torch.Tensor:
        """[sum T, 3, S, S] frames of the prompt's videos -> [video tokens, D]: every video's frames pooled by the
        video encoder, groups in order, the tokens of each group row by row (the placeholders' order)."""
        frames = self.project_tiles(pixel_values_videos)  # [sum T, s*s, D]
        counts = [frames.shape[0]] if video_grids is None else [int(t) for t in video_grids[:, 0].tolist()]
        encoder: MediaEncoder = self.config.video_encoder
        pieces = []
        for video in torch.split(frames, counts):
            for pool in encoder.pool_sizes:
                pieces.append(pool_groups(video, pool).flatten(0, 1))
        return torch.cat(pieces)

    def get_image_features(self, pixel_values: torch.Tensor, image_grids: torch.Tensor | None = None,
                           **_: Any) -> torch.Tensor:
        """[tiles, 3, S, S] of the prompt's images -> [image tokens, D] in placeholder order."""
        grids = [(0, 1, 1)] * pixel_values.shape[0] if image_grids is None else [tuple(g) for g in image_grids.tolist()]
        if grids and IMAGE_KINDS[grids[0][0]] == "s2":
            return self._s2_image(pixel_values, grids[0][1:])
        return self.project_tiles(pixel_values).flatten(0, 1)

    def _s2_image(self, pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """One dynamic-S2 image: multi-scale merge, projector per tile of the merged map, tiles merged back."""
        scales = self.config.s2_scales
        features = self.tile_features(pixels)  # [tiles of all scales, n*n, C]
        merged, (rows, cols) = merge_scales(features, scales, tuple(grid), self.config.s2_resize_output_to_scale_idx)
        tiles = split_chessboard(merged, rows, cols)  # [rows*cols, C*scales, n, n]
        projected = self.mm_projector(tiles.flatten(2).transpose(1, 2))  # [rows*cols, s*s, D]
        return merge_chessboard(projected, rows, cols)[0].flatten(1).transpose(0, 1)  # [(rows s)*(cols s), D]

    # ---- layout -----------------------------------------------------------------------------------------------
    def video_streams(self, input_ids: torch.Tensor, video_grids: torch.Tensor) -> list[dict[str, Any]]:
        """Where each video's tokens sit in a batch-1 prompt: per video and pool size, its groups (pooled frames),
        each the group's feature tokens (rows x cols, row by row) then its end tokens ("\n"). Each entry:
        positions [groups * (rows * cols + trailing)] (group-major), groups, rows, cols, trailing (end tokens per
        group), pool (frames per group). Start and sep tokens, when an encoder writes them, stay text."""
        encoder: MediaEncoder = self.config.video_encoder
        placeholders = torch.nonzero(input_ids[0] == self.config.video_token_id).flatten().cpu()
        side = self.tokens_per_side
        ends = len(self._token_ids(encoder.end_tokens))
        streams, used = [], 0
        for frames in (int(t) for t in video_grids[:, 0].tolist()):
            for t, h, w in encoder.pool_sizes:
                groups, rows, cols = frames // t, side // h, side // w
                feature = placeholders[used:used + groups * rows * cols]
                if feature.numel() != groups * rows * cols:
                    raise ValueError(f"the prompt has {placeholders.numel()} video placeholders, fewer than its "
                                     f"videos' {video_grids[:, 0].tolist()} frames need")
                used += feature.numel()
                feature = feature.view(groups, rows * cols)
                end = feature[:, -1:] + 1 + torch.arange(ends)  # [groups, ends] right after each group's tokens
                streams.append({"positions": torch.cat([feature, end], dim=1).flatten(), "groups": groups,
                                "rows": rows, "cols": cols, "trailing": ends, "pool": t})
        if used != placeholders.numel():
            raise ValueError(f"the prompt has {placeholders.numel()} video placeholders but its videos' frames "
                             f"{video_grids[:, 0].tolist()} make {used}")
        return streams

    def _token_ids(self, text: str | None) -> list[int]:
        """Token ids of an encoder's start / end / sep text (set by the loader from the tokenizer)."""
        if text is None:
            return []
        return list(getattr(self.config, "encoder_token_ids", {}).get(text, []))

    # ---- forward ----------------------------------------------------------------------------------------------
    def _scatter(self, embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, features: torch.Tensor,
                 what: str) -> torch.Tensor:
        mask = input_ids == token_id  # [B, N]
        count = int(mask.sum())
        if count != features.shape[0]:
            raise ValueError(f"{what} features and placeholders do not match: {features.shape[0]} features, "
                             f"{count} placeholder tokens")
        return embeds.masked_scatter(mask[..., None].to(embeds.device), features.to(embeds.device, embeds.dtype))

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                image_grids: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                video_grids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Any = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        """Embed the prompt, write the media features over their placeholders, run the decoder."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if pixel_values_videos is not None and bool((input_ids == self.config.video_token_id).any()):
                features = self.get_video_features(pixel_values_videos=pixel_values_videos, video_grids=video_grids)
                inputs_embeds = self._scatter(inputs_embeds, input_ids, self.config.video_token_id, features, "video")
            if pixel_values is not None and bool((input_ids == self.config.image_token_id).any()):
                features = self.get_image_features(pixel_values=pixel_values, image_grids=image_grids)
                inputs_embeds = self._scatter(inputs_embeds, input_ids, self.config.image_token_id, features, "image")
        cache = cache if cache is not None else past_key_values
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, use_cache=use_cache, **{CACHE_NAME: cache}, **kwargs)


class NVILAForConditionalGeneration(NVILAPreTrainedModel, GenerationMixin):
    """NVILAModel plus the LLM's head; works with `generate` (the media are encoded in the prefill)."""

    def __init__(self, config: NVILAConfig):
        super().__init__(config)
        self.model = NVILAModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()
        if getattr(text, "tie_word_embeddings", False):
            self.lm_head.weight = self.model.language_model.get_input_embeddings().weight

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_video_features(self, pixel_values_videos: torch.Tensor, video_grids: torch.Tensor | None = None,
                           **kwargs: Any) -> torch.Tensor:
        """The multimodal module's video features."""
        return self.model.get_video_features(pixel_values_videos, video_grids, **kwargs)

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                image_grids: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                video_grids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Any = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> CausalLMOutputWithPast:
        """Logits of the (kept) positions and the cache."""
        kwargs.pop("labels", None)
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, image_grids=image_grids,
                             pixel_values_videos=pixel_values_videos, video_grids=video_grids,
                             attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             **kwargs)
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        return CausalLMOutputWithPast(logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_NAME: getattr(outputs, CACHE_NAME)})
