"""Radial Attention: a static mask whose spatial window shrinks as the temporal distance grows.

Tokens attend their own frames fully and frame 0 as a sink; a frame at distance d keeps only the in-frame
positions within a band that halves each time d's bit length grows (attention energy decays with
distance). The band's scale is fitted per shape to the target density.

The rule is here (`Radial`, the pattern, and `radial_table`); what every pattern shares (block ranges,
density fitting, the `StaticPattern` base) is in genaccel/attention/patterns.py, and the shared sparse
attention config and kernel wiring in genaccel/accelerators/sparse_attention.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.flex import BlockPlan
from genaccel.attention.patterns import F_, S_, StaticPattern, block_ranges, fit_density, range_gap


@dataclass
class RadialConfig(SparseAttentionConfig):
    density: float = param(0.25, "target fraction of video block pairs computed (the band is fitted to it)")

    def validate(self):
        super().validate()
        check_density(self.density)


class RadialAttention(SparseAttention):
    name = "radial"
    summary = "sparse attention: static mask, spatial window shrinking with temporal distance (Radial Attention)"
    config_class = RadialConfig

    def pattern(self):
        return Radial(self.config.density)


# ------------------------------------------------------------------------------------------------ the rule
def radial_table(lo: torch.Tensor, hi: torch.Tensor, frame_tokens: int, scale: float) -> torch.Tensor:
    """Radial mask (G, nv, nv): pairs in the same frames, key blocks in frame 0 (the sink), and pairs at frame
    distance d whose in-frame positions are at most `scale * frame_tokens / 2**bit_length(d)` apart."""
    df = range_gap(lo[..., F_], hi[..., F_])
    ds = range_gap(lo[..., S_], hi[..., S_])
    bits = torch.floor(torch.log2(df.clamp(min=1).float())) + 1
    width = scale * frame_tokens / torch.exp2(bits)
    sink = (lo[..., F_] == 0)[:, None, :]
    return (df == 0) | sink | (ds <= width)


class Radial(StaticPattern):
    """Radial Attention's static mask, its band scale fitted to `density`."""

    name = "radial"
    SCALES = [float("inf")] + [2.0**-i for i in range(13)] + [0.0]  # inf: every block (density 1.0)

    def build(self, coords, context, block_size):
        lo, hi = block_ranges(coords, None, block_size)
        frame_tokens = context.grid[1] * context.grid[2] if context.grid else 1
        _, table = fit_density(self.SCALES, lambda s: radial_table(lo, hi, frame_tokens, s), self.density)
        return BlockPlan(table)
