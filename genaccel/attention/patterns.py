"""Sparse attention patterns: what every method's choice of video block pairs shares.

A pattern's `plan(q, k, v, context, block_size)` returns a `BlockPlan` (genaccel/attention/flex.py: a bool
table over video blocks and an optional token order) and a cache key (None when the plan depends on q/k and
must not be cached); `SparseAttentionKernel` (genaccel/attention/sparse.py) runs it. Each method's own rule
lives with its accelerator: `Radial` in genaccel/accelerators/radial.py, `SlidingTile` in sta.py,
`SpatialTemporal` in svg.py, `TopK` in topk.py. Here: the `Pattern` interface, `StaticPattern` (a table
built once per shape), and the block-level helpers the methods build their tables with.

Every table is built at block level from the latent coordinates of the tokens in each block (their min and
max frame, row, column and in-frame index: `token_coords`, `block_ranges`), so nothing is (query x key)
sized. Static patterns size their window to a target density (`fit_density`): among their window
candidates they take the densest table at or below the target (the sparsest one if none is), so
`radial(density=0.25)` and `sta(density=0.25)` are comparable at any grid; `stats()` reports the density
that ran.
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch

from .flex import BlockPlan
from .kernels import AttentionContext
from .layouts import AXES, tokens_in

F_, H_, W_, S_ = range(4)  # coordinate columns: frame, row, column, in-frame index (row * width + column)


# ------------------------------------------------------------------------------------------------ coordinates
def token_coords(context: AttentionContext, n: int) -> torch.Tensor:
    """(n, 4) long coordinates (frame, row, column, in-frame index) of the video tokens of a call, in sequence
    order. The video tokens span `context.axes` of `context.grid`; axes not spanned are 0."""
    coords = torch.zeros(n, 4, dtype=torch.long)
    grid = context.grid
    if grid is None or tokens_in(grid, context.axes) != n:
        return coords
    index = torch.arange(n)
    for axis in reversed(context.axes):  # unravel the sequence index, innermost axis last
        size = grid[AXES.index(axis)]
        coords[:, AXES.index(axis)] = index % size
        index = index // size
    coords[:, S_] = coords[:, H_] * grid[2] + coords[:, W_]
    return coords


def block_ranges(coords: torch.Tensor, order: torch.Tensor | None, block_size: int):
    """Per block of the ordered video tokens, the min and max of each coordinate: (lo, hi), each
    (G, nv, 4) with G the number of orders (1 when `order` is None or (1, n)). The last block is padded
    with its last token."""
    ordered = coords[None] if order is None else coords[order]  # (G, n, 4)
    n = ordered.shape[1]
    nv = -(-n // block_size)
    padded = torch.cat([ordered, ordered[:, -1:].expand(-1, nv * block_size - n, -1)], 1)
    blocks = padded.view(ordered.shape[0], nv, block_size, 4)
    return blocks.min(2).values, blocks.max(2).values


def range_gap(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Distance between the [lo, hi] ranges of every (query block, key block) pair, 0 when they overlap;
    lo, hi (G, nv) -> (G, nv, nv)."""
    return (torch.maximum(lo[:, None, :] - hi[:, :, None], lo[:, :, None] - hi[:, None, :])).clamp(min=0)


def fit_density(candidates, table_of: Callable, target: float):
    """The candidate whose table is the densest at or below `target` (the sparsest if none is), with its
    table: (candidate, table)."""
    best = None
    for candidate in candidates:
        table = table_of(candidate)
        density = table.float().mean().item()
        rank = (density <= target + 1e-9, density if density <= target + 1e-9 else -density)
        if best is None or rank > best[0]:
            best = (rank, candidate, table)
    return best[1], best[2]


# ------------------------------------------------------------------------------------------------ tables
def band_table(num_blocks: int, width: int) -> torch.Tensor:
    """(1, nv, nv): block pairs at most `width` blocks apart."""
    i = torch.arange(num_blocks)
    return ((i[:, None] - i[None, :]).abs() <= width)[None]


# ------------------------------------------------------------------------------------------------ patterns
class Pattern:
    """A sparse attention method's choice of block pairs, per call."""

    name = "pattern"

    def plan(self, q, k, v, context: AttentionContext, block_size: int) -> tuple[BlockPlan, Hashable | None]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-generation state."""

    def stats(self) -> dict:
        """Figures of the method itself (they outlive `reset`)."""
        return {}

    def reset_stats(self) -> None:
        """Forget the figures."""


class StaticPattern(Pattern):
    """A pattern that depends only on the call's shape and grid: built once per shape, mask cached."""

    def __init__(self, density: float):
        self.density = density
        self._plans: dict = {}

    def build(self, coords: torch.Tensor, context: AttentionContext, block_size: int) -> BlockPlan:
        raise NotImplementedError

    def plan(self, q, k, v, context, block_size):
        n = context.video[1] - context.video[0]
        key = (self.name, n, context.grid, context.axes, block_size)
        if key not in self._plans:
            self._plans[key] = self.build(token_coords(context, n), context, block_size)
        return self._plans[key], key


__all__ = [
    "F_",
    "H_",
    "S_",
    "W_",
    "Pattern",
    "StaticPattern",
    "band_table",
    "block_ranges",
    "fit_density",
    "range_gap",
    "token_coords",
]
