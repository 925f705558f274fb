"""Sliding Tile Attention: tokens grouped into 3-D tiles, each tile attending a window of tiles around it.

The video tokens are reordered so every (frames, rows, columns) tile is contiguous, which makes a local 3-D
window a set of whole blocks. The window's radii (in tiles, frames and space) are fitted per shape to the
target density.

The rule is here (`SlidingTile`, the pattern, with `tile_order` and `sta_table`); what every pattern
shares (block ranges, density fitting, the `StaticPattern` base) is in genaccel/attention/patterns.py, and
the shared sparse attention config and kernel wiring in genaccel/accelerators/sparse_attention.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.flex import BlockPlan
from genaccel.attention.patterns import F_, H_, W_, StaticPattern, block_ranges, fit_density, range_gap


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


# ------------------------------------------------------------------------------------------------ the rule
def tile_order(coords: torch.Tensor, tile: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """(1, n): the video tokens reordered so each (t, h, w) tile is contiguous, tiles in frame-major order."""
    tiles = [-(-g // t) for g, t in zip(grid, tile)]
    key = ((coords[:, F_] // tile[0]) * tiles[1] + coords[:, H_] // tile[1]) * tiles[2] + coords[:, W_] // tile[2]
    return torch.argsort(key, stable=True)[None]


def sta_table(lo: torch.Tensor, hi: torch.Tensor, tile: tuple[int, int, int], radius: tuple[int, int, int]):
    """Sliding-tile mask (G, nv, nv): pairs whose tiles are at most `radius` tiles apart along each axis."""
    keep = None
    for axis, (t, r) in enumerate(zip(tile, radius)):
        near = range_gap(lo[..., axis] // t, hi[..., axis] // t) <= r
        keep = near if keep is None else keep & near
    return keep


class SlidingTile(StaticPattern):
    """Sliding Tile Attention: tokens in (t, h, w) tiles, a window of tile radii fitted to `density`."""

    name = "sta"

    def __init__(self, density: float, tile: tuple[int, int, int] = (2, 8, 8)):
        super().__init__(density)
        self.tile = tuple(tile)

    def build(self, coords, context, block_size):
        grid = context.grid or (1, 1, 1)
        order = tile_order(coords, self.tile, grid)
        lo, hi = block_ranges(coords, order, block_size)
        tiles = [-(-g // t) for g, t in zip(grid, self.tile)]
        radii = [(rf, rs, rs) for rf in range(tiles[0]) for rs in range(max(tiles[1], tiles[2]))]
        _, table = fit_density(radii, lambda r: sta_table(lo, hi, self.tile, r), self.density)
        return BlockPlan(table, order)
