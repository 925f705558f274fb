"""Radial Attention: a static mask whose spatial window shrinks as the temporal distance grows.

Tokens attend their own frames fully and frame 0 as a sink; a frame at distance d keeps only the in-frame
positions within a band that halves each time d's bit length grows (attention energy decays with
distance). The band's scale is fitted per shape to the target density.
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig, check_density
from genaccel.attention.patterns import Radial


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
