"""Sparse VideoGen: each attention head is spatial or temporal, decided by online profiling.

Spatial heads attend a band of nearby blocks in frame-major order (plus frame 0 as a sink); temporal heads
see their tokens permuted to token-major order, where the same position across all frames is contiguous,
and attend a band there. Every `refresh` steps a few query rows are attended exactly and under both
patterns; each head takes the pattern with the lower error.
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.patterns import SpatialTemporal


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
