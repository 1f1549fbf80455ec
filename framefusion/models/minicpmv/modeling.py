"""MiniCPM-V 2.6 from transformers' modules: NaViT SigLIP (Idefics2VisionTransformer), the resampler, Qwen2Model.

Every image slice (a video frame, an image's thumbnail or one of its slices) is encoded at its own size: the
SigLIP encoder with NaViT position ids, which place a slice's h x w patch grid onto the 70 x 70 learned position
table by bucketing fractional coordinates (Idefics2's vision transformer, with the original's rounding of the
coordinates: vision.py), then the resampler turns its h * w patch features into `query_num` LLM tokens. Those
replace the prompt's "<unk>" placeholders in prompt order, and the Qwen2 decoder runs on the result. Slices of one
size are encoded together with no padding, so no patch attention mask is needed.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, Idefics2VisionConfig, PreTrainedModel, Qwen2Model
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

from framefusion.models.minicpmv.config import MiniCPMV26Config
from framefusion.models.minicpmv.resampler import Resampler
from framefusion.models.minicpmv.vision import NaViTEmbeddings

# transformers 5.24 renamed the outputs' cache field from past_key_values to cache
CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


class MiniCPMV26PreTrainedModel(PreTrainedModel):
    """Shared settings of the MiniCPM-V 2.6 modules."""

    config_class = MiniCPMV26Config
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Qwen2DecoderLayer", "Idefics2EncoderLayer", "Resampler"]

    def _init_weights(self, module: nn.Module) -> None:
        """Random initialisation (for random-weight models; checkpoints overwrite every parameter)."""
        if isinstance(module, Resampler):
            nn.init.trunc_normal_(module.query, std=0.02)
            with torch.no_grad():
                module.proj.copy_(torch.randn_like(module.proj) * module.proj.shape[0] ** -0.5)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, (nn.Embedding, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif hasattr(module, "weight") and type(module).__name__.endswith("RMSNorm"):
            nn.init.ones_(module.weight)


class MiniCPMV26Model(MiniCPMV26PreTrainedModel):
    """The multimodal module: encodes slices, writes their tokens over the placeholders, runs the decoder."""

    def __init__(self, config: MiniCPMV26Config):
        super().__init__(config)
        vision: Idefics2VisionConfig = config.vision_config
        self.vision_tower = Idefics2VisionTransformer(vision)
        self.vision_tower.embeddings = NaViTEmbeddings(vision)  # the original's position-id rounding
        self.resampler = Resampler(config.query_num, config.text_config.hidden_size, config.resampler_heads,
                                   vision.hidden_size)
        self.language_model = Qwen2Model(config.text_config)

    def get_input_embeddings(self) -> nn.Module:
        """The decoder's token embeddings."""
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the decoder's token embeddings."""
        self.language_model.set_input_embeddings(value)

    def encode_slices(self, pixel_values: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values [S, 3, H_max, W_max] (each slice top-left, zero-padded), tgt_sizes [S, 2] patch rows and
        columns of each slice -> [S, query_num, hidden] LLM tokens, in slice order."""
        patch = self.config.vision_config.patch_size
        sizes = tgt_sizes.tolist()
        out = pixel_values.new_empty(len(sizes), self.config.query_num, self.config.text_config.hidden_size)
        dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        batch = max(1, int(self.config.vision_batch_size))
        for rows, cols in sorted(set(map(tuple, sizes))):  # one pass per slice size: no padding, no mask
            index = torch.tensor([i for i, size in enumerate(sizes) if tuple(size) == (rows, cols)],
                                 device=pixel_values.device)
            for chunk in index.split(batch):
                pixels = pixel_values[chunk, :, : rows * patch, : cols * patch].to(dtype)
                hidden = self.vision_tower(pixels).last_hidden_state  # [b, rows * cols, vision_dim]
                out[chunk] = self.resampler(hidden, rows, cols).to(out.dtype)
        return out

    def get_image_features(self, pixel_values: torch.Tensor, tgt_sizes: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Tokens of the images' slices: [S, query_num, hidden]."""
        return self.encode_slices(pixel_values, tgt_sizes)

    def get_video_features(self, pixel_values_videos: torch.Tensor, tgt_sizes_videos: torch.Tensor,
                           **kwargs: Any) -> torch.Tensor:
        """Tokens of the videos' frames (and their slices, for frames larger than 448 x 448): [S, query_num, hidden]."""
        return self.encode_slices(pixel_values_videos, tgt_sizes_videos)

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                tgt_sizes: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                tgt_sizes_videos: torch.Tensor | None = None, slice_video: torch.Tensor | None = None,
                video_shape: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        """The decoder's output for input_ids [B, N] whose "<unk>" placeholders get the slices' tokens.

        slice_video [S_all] tells, in prompt order, whether each placeholder run is a video frame's slice (its video
        index) or an image's (-1); video_shape [V, 2] is (frames, slices per frame) of each video.
        """
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if pixel_values is not None or pixel_values_videos is not None:
                inputs_embeds = self._place_slices(input_ids, inputs_embeds, pixel_values, tgt_sizes,
                                                   pixel_values_videos, tgt_sizes_videos, slice_video)
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)

    def _place_slices(self, input_ids, inputs_embeds, pixel_values, tgt_sizes, pixel_values_videos,
                      tgt_sizes_videos, slice_video) -> torch.Tensor:
        """inputs_embeds [B, N, D] with every placeholder run replaced by its slice's query_num tokens."""
        images = self.get_image_features(pixel_values, tgt_sizes) if pixel_values is not None else None
        videos = (self.get_video_features(pixel_values_videos, tgt_sizes_videos)
                  if pixel_values_videos is not None else None)
        if slice_video is None:  # one kind only
            parts = [t for t in (videos, images) if t is not None]
            tokens = torch.cat(parts) if len(parts) > 1 else parts[0]
        else:
            is_video = (slice_video >= 0).to(inputs_embeds.device)
            tokens = inputs_embeds.new_empty(int(is_video.numel()), self.config.query_num, inputs_embeds.shape[-1])
            if videos is not None:
                tokens[is_video] = videos.to(tokens.dtype)
            if images is not None:
                tokens[~is_video] = images.to(tokens.dtype)
        mask = input_ids == self.config.image_token_id  # [B, N]
        if int(mask.sum()) != tokens.shape[0] * tokens.shape[1]:
            raise ValueError(f"MiniCPM-V 2.6: the prompt has {int(mask.sum())} image placeholder tokens but the "
                             f"pixels give {tokens.shape[0]} slices of {tokens.shape[1]} tokens")
        return inputs_embeds.masked_scatter(mask[..., None], tokens.reshape(-1, tokens.shape[-1]).to(inputs_embeds))


class MiniCPMV26ForConditionalGeneration(MiniCPMV26PreTrainedModel, GenerationMixin):
    """MiniCPM-V 2.6 with its LM head, for `generate`."""

    def __init__(self, config: MiniCPMV26Config):
        super().__init__(config)
        self.model = MiniCPMV26Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The decoder's token embeddings."""
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        """The LM head."""
        return self.lm_head

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                tgt_sizes: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                tgt_sizes_videos: torch.Tensor | None = None, slice_video: torch.Tensor | None = None,
                video_shape: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, **kwargs: Any) -> CausalLMOutputWithPast:
        """Logits of the last `logits_to_keep` positions (0: all); the cache goes by either of its names."""
        kwargs.pop("labels", None)
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, tgt_sizes=tgt_sizes,
                             pixel_values_videos=pixel_values_videos, tgt_sizes_videos=tgt_sizes_videos,
                             slice_video=slice_video, video_shape=video_shape, attention_mask=attention_mask,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        return CausalLMOutputWithPast(logits=logits, **{CACHE_FIELD: getattr(outputs, CACHE_FIELD, None)})
