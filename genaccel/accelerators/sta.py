"""Sliding Tile Attention: tokens grouped into 3-D tiles, each tile attending a window of tiles around it.

The video tokens are reordered so every (frames, rows, columns) tile is contiguous, which makes a local 3-D
window a set of whole blocks. The window's radii (in tiles, frames and space) are fitted per shape to the
target density.
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.patterns import SlidingTile


@dataclass
class SlidingTileConfig(SparseAttentionConfig):
    density: float = param(0.25, "target fraction of video block pairs computed (the window is fitted to it)")
    tile: tuple[int, int, int] = param((2, 8, 8), "tile size in latent tokens as frames:rows:columns")

    def validate(self):
        super().validate()
        check_density(self.density)
        if min(self.tile) < 1:
            raise ValueError("tile sizes must be >= 1")


class SlidingTileAttention(SparseAttention):
    name = "sta"
    summary = "sparse attention: tokens in 3-D tiles, each attending a window of tiles (Sliding Tile Attention)"
    config_class = SlidingTileConfig

    def pattern(self):
        return SlidingTile(self.config.density, self.config.tile)
