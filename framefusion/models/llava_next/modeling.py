"""LLaVA-NeXT's LlavaQwen model (LLaVA-Video, LLaVA-OneVision) built from transformers' SigLIP and Qwen2 modules.

`model.model` is the multimodal module: its forward takes `input_ids` whose video and image placeholder tokens are
already expanded to one per LLM token (the processor does it), encodes the pixels, puts the features at the
placeholders and runs `model.model.language_model` (a stock Qwen2Model). Positions are 0..N-1, as LLaVA-NeXT's.
"""

from __future__ import annotations

import re
from dataclasses import fields

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel, Qwen2Model, SiglipVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from framefusion.models.llava_next.configuration import LlavaQwenVideoConfig
from framefusion.models.llava_next.features import arrange_image, arrange_video, pool_frames, video_tokens

CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def build_projector(kind: str, vision_width: int, text_width: int) -> nn.Module:
    """LLaVA's mm_projector: `linear`, or `mlpNx_gelu` (Linear, then N-1 times GELU + Linear)."""
    if kind == "linear":
        return nn.Linear(vision_width, text_width)
    depth = int(re.fullmatch(r"mlp(\d+)x_gelu", kind).group(1))
    layers: list[nn.Module] = [nn.Linear(vision_width, text_width)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(text_width, text_width)]
    return nn.Sequential(*layers)


def tower_body(tower: nn.Module) -> nn.Module:
    """The module holding SigLIP's embeddings and encoder (some transformers releases nest it under .vision_model)."""
    return getattr(tower, "vision_model", tower)


def nested_tower(model: nn.Module) -> bool:
    """Whether this transformers' SiglipVisionModel keeps its layers under `.vision_model`."""
    return hasattr(model.model.vision_tower, "vision_model")


class LlavaQwenMultimodal(nn.Module):
    """SigLIP tower, projector, newline token and the Qwen2 decoder; forward merges features into the prompt."""

    def __init__(self, config: LlavaQwenVideoConfig):
        super().__init__()
        self.config = config
        settings = config.settings
        text, vision = config.text_config, config.vision_config
        self.vision_tower = SiglipVisionModel(vision)
        self.mm_projector = build_projector(settings.mm_projector_type, vision.hidden_size, text.hidden_size)
        self.language_model = Qwen2Model(text)
        self.image_newline = nn.Parameter(torch.zeros(text.hidden_size)) if settings.unpad else None

    @property
    def patches_per_side(self) -> int:
        """Side of the SigLIP feature grid of one frame or tile (27 for so400m at 384 px)."""
        return self.config.vision_config.image_size // self.config.vision_config.patch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[n, 3, H, W] pixels -> [n, side * side, D] projected features of the selected SigLIP layer."""
        tower = self.vision_tower
        pixels = pixels.to(tower.dtype)
        states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # tower built up to it
        return self.mm_projector(states)

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> list[torch.Tensor]:
        """[V, T, 3, H, W] frames -> per video [tokens, D]: pooled frames with their newline tokens."""
        frames = pixel_values_videos.shape[1]
        projected = self.encode(pixel_values_videos.flatten(0, 1))  # [V * T, side * side, D]
        side, settings = self.patches_per_side, self.config.settings
        return [arrange_video(pool_frames(chunk, side, settings), self.image_newline, settings)
                for chunk in projected.split(frames)]

    def get_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor,
                           image_tiles: torch.Tensor) -> list[torch.Tensor]:
        """[tiles, 3, H, W] tiles of all images (each image's base view first), image_sizes [I, 2] (width, height),
        image_tiles [I] -> per image [tokens, D]."""
        projected = self.encode(pixel_values)
        tile = self.config.vision_config.image_size
        return [arrange_image(chunk, (int(size[0]), int(size[1])), self.patches_per_side, tile, self.image_newline,
                              self.config.settings)
                for chunk, size in zip(projected.split([int(n) for n in image_tiles]), image_sizes)]

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
                image_tiles: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, **kwargs):
        """Embed the prompt, put video and image features at their placeholders, run the Qwen2 decoder."""
        if inputs_embeds is None:
            inputs_embeds = self.language_model.embed_tokens(input_ids)
            if pixel_values_videos is not None:
                inputs_embeds = self._place(inputs_embeds, input_ids, self.config.video_token_id,
                                            lambda: self.get_video_features(pixel_values_videos=pixel_values_videos),
                                            "video")
            if pixel_values is not None:
                inputs_embeds = self._place(inputs_embeds, input_ids, self.config.image_token_id,
                                            lambda: self.get_image_features(pixel_values=pixel_values, image_sizes=image_sizes,
                                                                            image_tiles=image_tiles),
                                            "image")
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)

    @staticmethod
    def _place(embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, features, what: str) -> torch.Tensor:
        mask = input_ids == token_id  # [B, N]
        count = int(mask.sum())
        if count == 0:  # a decode step: the pixels were used in the prefill
            return embeds
        values = torch.cat(features()).to(embeds.device, embeds.dtype)  # [count, D]
        if values.shape[0] != count:
            raise ValueError(f"the prompt has {count} {what} placeholder tokens but the {what} features are "
                             f"{values.shape[0]} tokens")
        return embeds.masked_scatter(mask[..., None].expand_as(embeds), values)


class LlavaQwenVideoPreTrainedModel(PreTrainedModel):
    """Shared settings of the native LlavaQwen model."""

    config_class = LlavaQwenVideoConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """Standard init, plus the newline token (LLaVA-NeXT: normal with std 1 / sqrt(hidden))."""
        super()._init_weights(module)
        if isinstance(module, LlavaQwenMultimodal) and module.image_newline is not None:
            with torch.no_grad():
                module.image_newline.normal_(0.0, module.image_newline.numel() ** -0.5)


class LlavaQwenForVideo(LlavaQwenVideoPreTrainedModel, GenerationMixin):
    """LLaVA-NeXT's LlavaQwenForCausalLM: `model` (LlavaQwenMultimodal) and `lm_head`."""

    def __init__(self, config: LlavaQwenVideoConfig):
        super().__init__(config)
        self.model = LlavaQwenMultimodal(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding of the Qwen2 decoder."""
        return self.model.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the token embedding."""
        self.model.language_model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        """The LM head."""
        return self.lm_head

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_sizes: torch.Tensor | None = None, image_tiles: torch.Tensor | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs) -> CausalLMOutputWithPast:
        """Logits of the prompt (or the last `logits_to_keep` positions); the cache comes back as the decoder's."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, pixel_values_videos=pixel_values_videos,
                             pixel_values=pixel_values, image_sizes=image_sizes, image_tiles=image_tiles, **kwargs)
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        return CausalLMOutputWithPast(logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)})


def video_token_count(config: LlavaQwenVideoConfig, frames: int, height: int) -> int:
    """LLM tokens of one video of `frames` frames of `height` pixels (newline tokens included)."""
    return video_tokens(frames, height // config.vision_config.patch_size, config.settings).total
