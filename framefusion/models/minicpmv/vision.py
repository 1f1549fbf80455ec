"""MiniCPM-V 2.6's vision tower: transformers' Idefics2VisionTransformer with the original's NaViT position ids.

The encoder is SigLIP with variable resolution (NaViT): a slice's h x w patch grid is laid onto the learned
side x side position table (70 x 70 for SigLIP-400M at 980 px / 14) by bucketing each patch's fractional row and
column, i / h and j / w, at the boundaries k / side. Idefics2's vision transformer is this encoder, with the same
parameter names; only its coordinates are computed differently: it multiplies i * (1 / h) in float32, while the
original takes torch.arange(0, 1 - 1e-6, 1 / h), which rounds differently where i / h lands exactly on a boundary
(for h = 49, 58, 77, 86, 98, 100, ... on an x86 CPU), moving such a patch to the neighbouring bucket. The
embeddings here use the original's rule, computed on the CPU as the original does.
"""

from __future__ import annotations

import torch
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings

EPSILON = 1e-6  # the original's coordinates stop short of 1 by this much


def fractional_coordinates(length: int) -> torch.Tensor:
    """[length] float32 patch coordinates 0, 1/length, ... computed as the original does (CPU arange)."""
    step = float(torch.tensor(1.0, dtype=torch.float32) / length)  # the original divides by an int32 tensor
    coords = torch.arange(0, 1 - EPSILON, step, dtype=torch.float32)
    if coords.numel() != length:
        raise ValueError(f"NaViT coordinates of a {length}-patch side came out {coords.numel()} long")
    return coords


def navit_position_ids(rows: int, cols: int, side: int) -> torch.Tensor:
    """[rows * cols] row-major indices into the side x side position table of a rows x cols patch grid."""
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    row = torch.bucketize(fractional_coordinates(rows), boundaries, right=True)
    col = torch.bucketize(fractional_coordinates(cols), boundaries, right=True)
    return (row[:, None] * side + col[None, :]).flatten()


class NaViTEmbeddings(Idefics2VisionEmbeddings):
    """Patch embedding plus the learned position of each patch, for a batch of slices of one size."""

    def forward(self, pixel_values: torch.Tensor, patch_attention_mask: torch.BoolTensor) -> torch.Tensor:
        """pixel_values [B, 3, h * p, w * p] (no padding) -> [B, h * w, D]."""
        if not bool(patch_attention_mask.all()):
            raise ValueError("MiniCPM-V 2.6's vision tower encodes slices of one size at a time, without padding")
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [B, h * w, D]
        rows, cols = pixel_values.shape[2] // self.patch_size, pixel_values.shape[3] // self.patch_size
        ids = navit_position_ids(rows, cols, self.num_patches_per_side).to(patches.device)
        return patches + self.position_embedding(ids)[None]
