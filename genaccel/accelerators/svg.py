"""Sparse VideoGen: each attention head is spatial or temporal, decided by online profiling.

Spatial heads attend a band of nearby blocks in frame-major order (plus frame 0 as a sink); temporal heads
see their tokens permuted to token-major order, where the same position across all frames is contiguous,
and attend a band there. Every `refresh` steps a few query rows are attended exactly and under both
patterns; each head takes the pattern with the lower error.

The rule is here (`SpatialTemporal`, the pattern, with `token_major_order` and the profiling,
`head_errors`); what every pattern shares (block ranges, bands, density fitting) is in
genaccel/attention/patterns.py, and the shared sparse attention config and kernel wiring in
genaccel/accelerators/sparse_attention.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.flex import BlockPlan
from genaccel.attention.kernels import AttentionContext
from genaccel.attention.patterns import F_, S_, Pattern, band_table, block_ranges, fit_density, token_coords


@dataclass
class SparseVideoGenConfig(SparseAttentionConfig):
    density: float = param(0.25, "target fraction of video block pairs computed per head")
    samples: int = param(32, "query rows attended exactly to class each head")
    refresh: int = param(5, "steps between re-classing the heads")

    def validate(self):
        super().validate()
        check_density(self.density)
        if self.samples < 1 or self.refresh < 1:
            raise ValueError("samples and refresh must be >= 1")


class SparseVideoGen(SparseAttention):
    name = "svg"
    summary = "sparse attention: heads classed spatial or temporal by online profiling (Sparse VideoGen)"
    config_class = SparseVideoGenConfig

    def pattern(self):
        return SpatialTemporal(self.config.density, samples=self.config.samples, refresh=self.config.refresh)


# ------------------------------------------------------------------------------------------------ the rule
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
            self._candidates[key] = [
                (None, torch.arange(n) // block_size, spatial),
                (order, position // block_size, temporal),
            ]
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
                self._plans[key] = BlockPlan(
                    torch.where(heads[:, :, None], temporal, spatial), torch.where(heads, order, identity)
                )
        return self._plans[key], key
