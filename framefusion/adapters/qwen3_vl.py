"""Qwen3-VL: Qwen2-VL's layout (frames split by timestamp text) plus deepstack features added in early layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from framefusion.adapters.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Deepstack adds per-visual-token features after the first layers; they follow the alive tokens."""

    name = "Qwen3-VL"
    model_types = ("qwen3_vl", "qwen3_vl_moe")

    def install_extras(self, engine, model: nn.Module) -> list[Callable[[], None]]:
        """Wrap `_deepstack_process` so the visual mask and features are cut to the alive tokens."""
        text_model = self.text_model(model)
        original = text_model._deepstack_process

        def deepstack(hidden_states, visual_pos_masks, visual_embeds):
            run = engine.run
            if run is not None and run.version > 0 and visual_pos_masks is not None:
                visual_pos_masks, visual_embeds = cut_deepstack(visual_pos_masks, visual_embeds, run.alive)
            return original(hidden_states, visual_pos_masks, visual_embeds)

        text_model._deepstack_process = deepstack
        return [lambda: delattr(text_model, "_deepstack_process")]


def cut_deepstack(visual_pos_masks: torch.Tensor, visual_embeds: torch.Tensor,
                  alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice the [1, N] visual mask and its [n_visual, D] features to the alive positions [n_alive]."""
    mask = visual_pos_masks[0]
    alive = alive.to(mask.device)
    feature_row = torch.cumsum(mask.long(), dim=0) - 1  # [N] row of each visual position in visual_embeds
    kept = alive[mask[alive]]
    return visual_pos_masks[:, alive], visual_embeds[feature_row[kept].to(visual_embeds.device)]
