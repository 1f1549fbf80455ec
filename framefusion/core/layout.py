"""Where a prompt's video tokens sit: (video, frame, patch) for every reducible position."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class VideoGrid:
    """The token grid of one video as the LLM sees it."""

    frames: int  # grid frames (Qwen2-VL: temporal patches)
    rows: int
    cols: int
    raw_frames_per_frame: int = 1  # sampled frames folded into one grid frame (Qwen-VL temporal_patch_size)
    trailing: int = 0  # tokens after the rows x cols grid in every grid frame, reduced like the grid's (NVILA's "\n")

    @property
    def tokens_per_frame(self) -> int:
        """P: vision tokens per grid frame (the grid's, then the trailing ones)."""
        return self.rows * self.cols + self.trailing


@dataclass(frozen=True)
class TokenLayout:
    """Video tokens of one prompt; every other position (text, images, separators) is never reduced."""

    seq_len: int
    positions: torch.Tensor  # [N_v] long, ascending sequence positions of the video tokens
    video: torch.Tensor  # [N_v] long, which video of the prompt
    frame: torch.Tensor  # [N_v] long, grid frame inside its video
    patch: torch.Tensor  # [N_v] long, row-major index inside its frame's grid
    grids: tuple[VideoGrid, ...]  # one per video
    # [E] long, ascending: non-video positions a FrameFusion prune step ranks together with the video tokens (never
    # merged, not part of N_v). Empty for every family but where the authors' adapter prunes them too (InternVL2.5:
    # the "</img>\nFrameK: <img>" text between the frames of a video).
    prune_extra: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def num_vision_tokens(self) -> int:
        """N_v."""
        return int(self.positions.numel())

    @property
    def num_videos(self) -> int:
        """Videos in the prompt."""
        return len(self.grids)

    def rows_cols(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid row and column of every video token, each [N_v] long (a trailing token's row is >= its grid's rows:
        it has no place in the picture)."""
        cols = torch.tensor([g.cols for g in self.grids], dtype=torch.long)[self.video]
        return self.patch // cols, self.patch % cols

    def subset(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> "TokenLayout":
        """The layout of the video tokens `ids` (indices into the N_v tokens, in order), optionally at other
        positions (e.g. their rows after earlier removals)."""
        return TokenLayout(self.seq_len, self.positions[ids] if positions is None else positions, self.video[ids],
                           self.frame[ids], self.patch[ids], self.grids, self.prune_extra)

    def without_positions(self, drop: torch.Tensor) -> "TokenLayout":
        """The same layout with the given sequence positions removed from the reducible set."""
        keep = ~torch.isin(self.positions, drop.to(self.positions.device))
        extra = self.prune_extra[~torch.isin(self.prune_extra, drop.to(self.prune_extra.device))]
        return TokenLayout(self.seq_len, self.positions[keep], self.video[keep], self.frame[keep], self.patch[keep],
                           self.grids, extra)

    def with_prune_extra(self, positions: torch.Tensor) -> "TokenLayout":
        """The same layout whose prune steps also rank the given non-video positions (see `prune_extra`)."""
        extra = torch.unique(positions.to("cpu", torch.long))  # sorted
        extra = extra[~torch.isin(extra, self.positions)]
        return TokenLayout(self.seq_len, self.positions, self.video, self.frame, self.patch, self.grids, extra)


def layout_from_videos(seq_len: int, video_positions: list[torch.Tensor], grids: list[VideoGrid]) -> TokenLayout:
    """Build a layout from each video's token positions (frame-major, row-major inside a frame)."""
    if len(video_positions) != len(grids):
        raise ValueError(f"{len(video_positions)} video token spans but {len(grids)} video grids")
    positions, video, frame, patch = [], [], [], []
    for index, (pos, grid) in enumerate(zip(video_positions, grids)):
        expected = grid.frames * grid.tokens_per_frame
        if pos.numel() != expected:
            raise ValueError(
                f"video {index}: {pos.numel()} video tokens in the prompt but its grid "
                f"{grid.frames}x{grid.rows}x{grid.cols} needs {expected}"
            )
        local = torch.arange(expected, dtype=torch.long)
        positions.append(pos.to("cpu", torch.long))
        video.append(torch.full((expected,), index, dtype=torch.long))
        frame.append(local // grid.tokens_per_frame)
        patch.append(local % grid.tokens_per_frame)
    empty = torch.zeros(0, dtype=torch.long)
    return TokenLayout(
        seq_len=seq_len,
        positions=torch.cat(positions) if positions else empty,
        video=torch.cat(video) if video else empty,
        frame=torch.cat(frame) if frame else empty,
        patch=torch.cat(patch) if patch else empty,
        grids=tuple(grids),
    )
