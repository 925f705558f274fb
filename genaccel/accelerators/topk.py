"""Top-k block attention: dynamic block sparsity from a cheap estimate of each block's attention mass.

On every call, block-mean queries are scored against block-mean keys; each query block keeps the fewest
key blocks whose estimated share of its attention reaches the threshold (and always its own block).

The rule is here (`TopK`, the pattern, and `topk_table`); the `Pattern` interface is in
genaccel/attention/patterns.py, the shared sparse attention config and kernel wiring in
genaccel/accelerators/sparse_attention.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genaccel.accelerators.base import param
from genaccel.accelerators.sparse_attention import SparseAttention, SparseAttentionConfig
from genaccel.attention.flex import BlockPlan
from genaccel.attention.kernels import AttentionContext
from genaccel.attention.patterns import Pattern


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


# ------------------------------------------------------------------------------------------------ the rule
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


class TopK(Pattern):
    """Dynamic block sparsity: per call, the fewest key blocks whose estimated mass reaches `threshold`."""

    name = "topk"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def plan(self, q, k, v, context, block_size):
        return BlockPlan(topk_table(q, k, context, block_size, self.threshold)), None
