"""Sparse attention patterns: which video block pairs each method computes.

This file is the math; the accelerators (genaccel/accelerators/{svg,radial,sta,topk}.py) wire it in. A
pattern's `plan(q, k, v, context, block_size)` returns a `BlockPlan` (a bool table over video blocks and an
optional token order) and a cache key (None when the plan depends on q/k and must not be cached).

Every table is built at block level from the latent coordinates of the tokens in each block (their min and
max frame, row, column and in-frame index), so nothing here is (query x key) sized except the few sampled
query rows of SVG's profiling. Static patterns size their window to a target density: among their window
candidates they take the densest table at or below the target (the sparsest one if none is), so
`radial(density=0.25)` and `sta(density=0.25)` are comparable at any grid; `stats()` reports the density
that ran.

- `Radial`: frame distance 0 dense, frame 0 a sink; farther frame pairs keep a band of in-frame positions
  whose width halves each time the distance's bit length grows (Radial Attention's energy decay).
- `SlidingTile`: tokens reordered into (t, h, w) tiles; each tile attends the tiles within a window of tile
  radii around it (Sliding Tile Attention).
- `SpatialTemporal`: each head spatial (a band of nearby blocks in frame-major order, frame 0 a sink) or
  temporal (a band in token-major order: the same positions across all frames), chosen by profiling a few
  query rows against exact attention, refreshed every few steps (Sparse VideoGen).
- `TopK`: per call, block importance estimated from block-mean queries and keys; each query block keeps
  the fewest key blocks whose estimated mass reaches a threshold (dynamic block sparsity).
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch
import torch.nn.functional as F

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


def _gap(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
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


def radial_table(lo: torch.Tensor, hi: torch.Tensor, frame_tokens: int, scale: float) -> torch.Tensor:
    """Radial mask (G, nv, nv): pairs in the same frames, key blocks in frame 0 (the sink), and pairs at frame
    distance d whose in-frame positions are at most `scale * frame_tokens / 2**bit_length(d)` apart."""
    df = _gap(lo[..., F_], hi[..., F_])
    ds = _gap(lo[..., S_], hi[..., S_])
    bits = torch.floor(torch.log2(df.clamp(min=1).float())) + 1
    width = scale * frame_tokens / torch.exp2(bits)
    sink = (lo[..., F_] == 0)[:, None, :]
    return (df == 0) | sink | (ds <= width)


def tile_order(coords: torch.Tensor, tile: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """(1, n): the video tokens reordered so each (t, h, w) tile is contiguous, tiles in frame-major order."""
    tiles = [-(-g // t) for g, t in zip(grid, tile)]
    key = ((coords[:, F_] // tile[0]) * tiles[1] + coords[:, H_] // tile[1]) * tiles[2] + coords[:, W_] // tile[2]
    return torch.argsort(key, stable=True)[None]


def sta_table(lo: torch.Tensor, hi: torch.Tensor, tile: tuple[int, int, int], radius: tuple[int, int, int]):
    """Sliding-tile mask (G, nv, nv): pairs whose tiles are at most `radius` tiles apart along each axis."""
    keep = None
    for axis, (t, r) in enumerate(zip(tile, radius)):
        near = _gap(lo[..., axis] // t, hi[..., axis] // t) <= r
        keep = near if keep is None else keep & near
    return keep


def token_major_order(coords: torch.Tensor, frames: int) -> torch.Tensor:
    """(1, n): the video tokens reordered from frame-major to token-major (each position's frames together)."""
    return torch.argsort(coords[:, S_] * frames + coords[:, F_], stable=True)[None]


def head_errors(q, k, v, context: AttentionContext, candidates, samples: int, generator) -> torch.Tensor:
    """SVG's online profiling: for `samples` random video query rows, the mean squared error of each
    candidate pattern's output against exact attention, per head: (C, H). A candidate is (block, table):
    the block of each video token (n,) in that pattern's order, and its table (1, nv, nv). Text keys are
    kept in every candidate; the family's key-padding mask applies to all."""
    v0, v1 = context.video
    n = v1 - v0
    rows = torch.randperm(n, generator=generator)[:samples]
    scores = (q[:, :, v0 + rows].float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, m, S)
    mask = context.attn_mask
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    exact = scores.softmax(-1) @ v.float()
    errors = []
    for block, table in candidates:
        keep = torch.ones(rows.numel(), k.shape[2], dtype=torch.bool)
        keep[:, v0:v1] = table[0][block[rows]][:, block]
        out = scores.masked_fill(~keep.to(scores.device), float("-inf")).softmax(-1) @ v.float()
        errors.append(((out - exact) ** 2).mean(dim=(0, 2, 3)))
    return torch.stack(errors).cpu()


def topk_table(q, k, context: AttentionContext, block_size: int, threshold: float) -> torch.Tensor:
    """Dynamic table (H, nv, nv): block-mean queries against block-mean keys (weighted by the number of tokens
    in the key block) estimate each key block's share of a query block's attention, averaged over the
    batch; each query block keeps its key blocks in decreasing share until their sum reaches `threshold`,
    and always its own block."""
    v0, v1 = context.video
    n = v1 - v0
    nv = -(-n // block_size)
    if threshold >= 1.0:
        return torch.ones(1, nv, nv, dtype=torch.bool)

    def pooled(x):
        x = F.pad(x[:, :, v0:v1].float(), (0, 0, 0, nv * block_size - n))
        return x.view(*x.shape[:2], nv, block_size, -1).sum(3)

    counts = torch.full((nv,), float(block_size), device=q.device)
    counts[-1] = n - (nv - 1) * block_size
    qp = pooled(q) / counts[:, None]
    kp = pooled(k) / counts[:, None]
    logits = (qp @ kp.transpose(-1, -2)) * q.shape[-1] ** -0.5 + counts.log()
    share = logits.softmax(-1).mean(0)  # (H, nv, nv)
    ranked, index = share.sort(-1, descending=True)
    keep_ranked = (ranked.cumsum(-1) - ranked) < threshold  # the fewest blocks whose sum reaches threshold
    table = torch.zeros_like(keep_ranked).scatter_(-1, index, keep_ranked)
    return (table | torch.eye(nv, dtype=torch.bool, device=table.device)).cpu()


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


class Radial(StaticPattern):
    """Radial Attention's static mask, its band scale fitted to `density`."""

    name = "radial"
    SCALES = [float("inf")] + [2.0 ** -i for i in range(13)] + [0.0]  # inf: every block (density 1.0)

    def build(self, coords, context, block_size):
        lo, hi = block_ranges(coords, None, block_size)
        frame_tokens = context.grid[1] * context.grid[2] if context.grid else 1
        _, table = fit_density(self.SCALES, lambda s: radial_table(lo, hi, frame_tokens, s), self.density)
        return BlockPlan(table)


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


class SpatialTemporal(Pattern):
    """Sparse VideoGen: spatial or temporal heads by online profiling, refreshed every `refresh` steps."""

    name = "svg"

    def __init__(self, density: float, samples: int = 32, refresh: int = 5, seed: int = 0):
        self.density = density
        self.samples = samples
        self.refresh = refresh
        self.seed = seed
        self._candidates: dict = {}
        self._plans: dict = {}  # head split -> BlockPlan
        self.reset()
        self.reset_stats()

    def reset(self) -> None:
        self._heads: dict = {}  # (layer name, branch, sample) -> (temporal heads (H,) bool, step profiled)

    def reset_stats(self) -> None:
        self._profiled = [0, 0, 0]  # profiling calls, heads classed, heads classed temporal

    def stats(self) -> dict:
        """profiled: profiling calls; temporal_heads: share of the heads classed temporal over them."""
        calls, heads, temporal = self._profiled
        return {"profiled": calls, "temporal_heads": round(temporal / heads, 4) if heads else None}

    def _both(self, context: AttentionContext, n: int, block_size: int):
        """The spatial and temporal candidates of a shape: [(order or None, block of each token, table)]."""
        key = (n, context.grid, context.axes, block_size)
        if key not in self._candidates:
            coords = token_coords(context, n)
            frames = context.grid[0] if context.grid else 1
            spatial_lo, _ = block_ranges(coords, None, block_size)
            nv = spatial_lo.shape[1]
            sink = (spatial_lo[..., F_] == 0)[:, None, :]
            _, spatial = fit_density(range(nv), lambda w: band_table(nv, w) | sink, self.density)
            _, temporal = fit_density(range(nv), lambda w: band_table(nv, w), self.density)
            order = token_major_order(coords, frames)
            position = torch.empty_like(order[0]).scatter_(0, order[0], torch.arange(n))
            self._candidates[key] = [(None, torch.arange(n) // block_size, spatial),
                                     (order, position // block_size, temporal)]
        return self._candidates[key]

    def plan(self, q, k, v, context, block_size):
        n = context.video[1] - context.video[0]
        (_, s_block, spatial), (order, t_block, temporal) = self._both(context, n, block_size)
        state = (context.name, context.branch, context.sample)
        step = context.step or 0
        known = self._heads.get(state)
        if known is None or step - known[1] >= self.refresh:
            generator = torch.Generator().manual_seed(self.seed + context.layer)
            errors = head_errors(q, k, v, context, [(s_block, spatial), (t_block, temporal)], self.samples, generator)
            known = (errors[1] < errors[0], step)
            self._heads[state] = known
            self._profiled[0] += 1
            self._profiled[1] += known[0].numel()
            self._profiled[2] += int(known[0].sum())
        # one plan per split of the heads (few distinct ones), so a plan's figures and device copies are reused
        key = ("svg", tuple(known[0].tolist()), n, context.grid, context.axes, block_size)
        if key not in self._plans:
            if len(self._plans) >= 256:
                self._plans.clear()
            heads = known[0][:, None]
            if not heads.any():
                self._plans[key] = BlockPlan(spatial)
            else:
                identity = torch.arange(n)[None]
                self._plans[key] = BlockPlan(torch.where(heads[:, :, None], temporal, spatial),
                                             torch.where(heads, order, identity))
        return self._plans[key], key


class TopK(Pattern):
    """Dynamic block sparsity: per call, the fewest key blocks whose estimated mass reaches `threshold`."""

    name = "topk"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def plan(self, q, k, v, context, block_size):
        return BlockPlan(topk_table(q, k, context, block_size, self.threshold)), None


__all__ = [
    "Pattern", "StaticPattern", "Radial", "SlidingTile", "SpatialTemporal", "TopK", "band_table", "block_ranges",
    "fit_density", "head_errors", "radial_table", "sta_table", "tile_order", "token_coords", "token_major_order",
    "topk_table",
]
