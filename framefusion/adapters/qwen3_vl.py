"""Qwen3-VL: Qwen2-VL's layout (frames split by timestamp text) plus deepstack features added in early layers."""

from __future__ import annotations

import torch
from torch import nn

from framefusion.adapters.qwen2_vl import Qwen2VLAdapter
from framefusion.core.patches import PatchStack


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Deepstack adds per-visual-token features after the first layers; they follow the alive tokens."""

    name = "Qwen3-VL"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    frames_in_own_spans = True
    threshold_source = "no published value: Qwen2-VL's (run framefusion calibrate for this model)"

    def install_extras(self, engine, model: nn.Module, patches: PatchStack) -> None:
        """Wrap `_deepstack_process` so the visual mask and features are cut to the alive tokens."""

        def make(original):
            def deepstack(hidden_states, visual_pos_masks, visual_embeds):
                rows = engine.rows()  # the positions the layers pass on (a replayed video prefix leaves them out)
                if rows is not None and visual_pos_masks is not None:
                    visual_pos_masks, visual_embeds = cut_deepstack(visual_pos_masks, visual_embeds, rows)
                return original(hidden_states, visual_pos_masks, visual_embeds)

            return deepstack

        patches.wrap_method(self.text_model(model), "_deepstack_process", make, "Qwen3-VL: deepstack")


def cut_deepstack(visual_pos_masks: torch.Tensor, visual_embeds: torch.Tensor,
                  alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice the [1, N] visual mask and its [n_visual, D] features to the alive positions [n_alive]."""
    mask = visual_pos_masks[0]
    alive = alive.to(mask.device)
    feature_row = torch.cumsum(mask.long(), dim=0) - 1  # [N] row of each visual position in visual_embeds
    kept = alive[mask[alive]]
    return visual_pos_masks[:, alive], visual_embeds[feature_row[kept].to(visual_embeds.device)]
