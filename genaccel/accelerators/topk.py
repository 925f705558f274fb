"""Top-k block attention: dynamic block sparsity from a cheap estimate of each block's attention mass.

On every call, block-mean queries are scored against block-mean keys; each query block keeps the fewest
key blocks whose estimated share of its attention reaches the threshold (and always its own block).
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig
from genaccel.attention.patterns import TopK


@dataclass
class TopKConfig(SparseAttentionConfig):
    threshold: float = param(0.9, "estimated attention mass each query block keeps (1.0: every block)")

    def validate(self):
        super().validate()
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")


class TopKAttention(SparseAttention):
    name = "topk"
    summary = "sparse attention: per call, the key blocks holding most of each query block's estimated mass"
    config_class = TopKConfig

    def pattern(self):
        return TopK(self.config.threshold)
