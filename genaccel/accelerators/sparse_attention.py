"""What the sparse attention accelerators share: dense warm-up settings, the seam kernel, figures.

Each method (svg, radial, sta, topk) is one module holding its config (these fields plus its own knob), its
`Accelerator` and its rule: the pattern (a `Pattern` of genaccel/attention/patterns.py) that chooses the
block pairs to compute. The kernel that runs the pattern (genaccel/attention/sparse.py) goes behind the
attention seam (`KernelOwner`).
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import SLOT_ATTENTION_KERNEL, AcceleratorConfig, param
from genaccel.accelerators.kernel_owner import KernelOwner
from genaccel.attention.patterns import Pattern
from genaccel.attention.sparse import SparseAttentionKernel


@dataclass
class SparseAttentionConfig(AcceleratorConfig):
    dense_layers: int = param(1, "first self-attention layers that always run dense")
    dense_steps: int = param(6, "first denoising steps that run dense (they decide layout and motion)")
    max_density: float = param(
        0.6,
        "a call whose plan keeps more of its blocks than this runs dense: there flex "
        "attention is no faster than dense SDPA (about 0.5 on CPU, 0.7 on GPU)",
    )
    block: int = param(
        128,
        "block size in tokens, a power of two: attention is kept or skipped per (query "
        "block, key block); 128 suits real models, small blocks only tiny ones",
    )

    def validate(self):
        if self.dense_layers < 0 or self.dense_steps < 0:
            raise ValueError("dense_layers and dense_steps must be >= 0")
        if not 0.0 < self.max_density <= 1.0:
            raise ValueError("max_density must be in (0, 1]")
        if self.block < 2 or self.block & (self.block - 1):
            raise ValueError("block must be a power of two >= 2")


def check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError("density must be in (0, 1]")


class SparseAttention(KernelOwner):
    """Base of the sparse attention accelerators: one `SparseAttentionKernel` per denoiser."""

    slots = frozenset({SLOT_ATTENTION_KERNEL})
    factorised_reason = "where block sparsity saves next to nothing"

    def pattern(self) -> Pattern:
        """A fresh pattern for one denoiser."""
        raise NotImplementedError

    def make_kernel(self, inner):
        c = self.config
        return SparseAttentionKernel(
            self.pattern(),
            dense_layers=c.dense_layers,
            dense_steps=c.dense_steps,
            block_size=c.block,
            max_density=c.max_density,
            inner=inner,
        )
