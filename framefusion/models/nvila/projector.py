"""NVILA's vision-to-language projectors, with the published parameter names (`layers.<i>.weight`, ...).

The `mlp_downsample*` projectors first fuse each k x k block of neighbouring SigLIP tokens into one token (their
features concatenated row by row, the grid padded with zeros to a multiple of k), then run an MLP. The layer lists
below are the published architectures; their positions in `layers` are the indices of the saved weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# projector type -> (k of the k x k fusion, the MLP after it as a list of steps). Widths are in units of
# m = mm_hidden_size (the vision features' width) or h = the LLM's hidden size: ("ln", a) is LayerNorm(a),
# ("linear", a, b) is Linear(a, b), ("gelu",) the exact GELU. Width specs: "m*4" (4 m), "m/3" (m // 3), "h".
_MLPS = {
    "mlp_downsample": (2, [("ln", "m*4"), ("linear", "m*4", "h"), ("gelu",), ("linear", "h", "h")]),
    "mlp_downsample_2x2_fix": (2, [("ln", "m*4"), ("linear", "m*4", "h"), ("gelu",), ("linear", "h", "h")]),
    "mlp_downsample_3x3_fix": (3, [("ln", "m*9"), ("linear", "m*9", "m*3"), ("gelu",), ("ln", "m*3"),
                                   ("linear", "m*3", "h"), ("gelu",), ("linear", "h", "h")]),
    "mlp_downsample_3x3_s2": (3, [("ln", "m*9"), ("linear", "m*9", "m*3"), ("gelu",), ("ln", "m*3"),
                                  ("linear", "m*3", "m"), ("gelu",), ("ln", "m"), ("linear", "m", "m/3"), ("gelu",),
                                  ("ln", "m/3"), ("linear", "m/3", "h"), ("gelu",), ("linear", "h", "h")]),
    "mlp_downsample_3x3_s2_new": (3, [("ln", "m*9"), ("linear", "m*9", "m*4"), ("gelu",), ("ln", "m*4"),
                                      ("linear", "m*4", "m*2"), ("gelu",), ("ln", "m*2"), ("linear", "m*2", "m"),
                                      ("gelu",), ("ln", "m"), ("linear", "m", "m/3"), ("gelu",), ("ln", "m/3"),
                                      ("linear", "m/3", "h"), ("gelu",), ("linear", "h", "h")]),
}


class ProjectorError(ValueError):
    """A projector type this module does not know."""


def _width(spec: str, m: int, h: int) -> int:
    """A width spec ("m*4", "m/3", "m", "h") for mm_hidden_size m and LLM width h."""
    base = m if spec[0] == "m" else h
    if "*" in spec:
        return base * int(spec.split("*")[1])
    if "/" in spec:
        return base // int(spec.split("/")[1])
    return base


def fuse_blocks(features: torch.Tensor, k: int) -> torch.Tensor:
    """[B, n*n, C] tokens of an n x n grid -> [B, s*s, k*k*C], s = ceil(n / k): each k x k block's features
    concatenated row by row (zero padding at the bottom and right when n is not a multiple of k)."""
    if k == 1:
        return features
    batch, tokens, channels = features.shape
    side = math.isqrt(tokens)
    grid = features.reshape(batch, side, side, channels)
    padded = -(-side // k) * k
    if padded != side:
        grid = nn.functional.pad(grid, (0, 0, 0, padded - side, 0, padded - side))
    s = padded // k
    blocks = grid.reshape(batch, s, k, s, k, channels).permute(0, 1, 3, 2, 4, 5)  # [B, s, s, k(row), k(col), C]
    return blocks.reshape(batch, s * s, k * k * channels)


class NVILAProjector(nn.Module):
    """The multimodal projector of one published type; forward([B, n*n, m]) -> [B, s*s, h]."""

    def __init__(self, projector_type: str, mm_hidden_size: int, hidden_size: int):
        super().__init__()
        self.projector_type = projector_type
        m, h = mm_hidden_size, hidden_size
        if projector_type == "identity":
            self.downsample, self.layers = 1, nn.Identity()
        elif projector_type == "linear":
            self.downsample, self.layers = 1, nn.Linear(m, h)
        elif projector_type in _MLPS:
            self.downsample, steps = _MLPS[projector_type]
            modules: list[nn.Module] = [nn.Identity()]  # index 0: the k x k fusion (no weights)
            for step in steps:
                if step[0] == "ln":
                    modules.append(nn.LayerNorm(_width(step[1], m, h)))
                elif step[0] == "linear":
                    modules.append(nn.Linear(_width(step[1], m, h), _width(step[2], m, h)))
                else:
                    modules.append(nn.GELU())
            self.layers = nn.Sequential(*modules)
        elif projector_type.startswith("mlp") and projector_type.endswith("x_gelu"):
            depth = int(projector_type[3:-6])
            modules = [nn.Linear(m, h)]
            for _ in range(1, depth):
                modules += [nn.GELU(), nn.Linear(h, h)]
            self.downsample, self.layers = 1, nn.Sequential(*modules)
        else:
            raise ProjectorError(f"unknown mm_projector_type {projector_type!r}; known: identity, linear, "
                                 f"mlpNx_gelu, {', '.join(_MLPS)}")

    def tokens_per_side(self, patches_per_side: int) -> int:
        """LLM tokens per side of a tile of `patches_per_side` SigLIP patches."""
        return -(-patches_per_side // self.downsample)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, n*n, m] vision features -> [B, s*s, h] LLM embeddings."""
        return self.layers(fuse_blocks(features, self.downsample))
