"""What the sparse attention accelerators share: dense warm-up settings, the seam kernel, figures.

Each method (svg, radial, sta, topk) is one module with its config (these fields plus its own knob) and an
`Accelerator` that names its pattern (genaccel/attention/patterns.py). The kernel goes behind the attention
seam, installed by `Acceleration` because these accelerators hold the attention-kernel slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import SLOT_ATTENTION_KERNEL, Accelerator, AcceleratorConfig, param
from genaccel.attention.layouts import LAYOUTS
from genaccel.attention.patterns import Pattern
from genaccel.attention.sparse import SparseAttentionKernel


@dataclass
class SparseAttentionConfig(AcceleratorConfig):
    dense_layers: int = param(1, "first self-attention layers that always run dense")
    dense_steps: int = param(6, "first denoising steps that run dense (they decide layout and motion)")
    block: int = param(128, "block size in tokens, a power of two: attention is kept or skipped per (query "
                       "block, key block); 128 suits real models, small blocks only tiny ones")

    def validate(self):
        if self.dense_layers < 0 or self.dense_steps < 0:
            raise ValueError("dense_layers and dense_steps must be >= 0")
        if self.block < 2 or self.block & (self.block - 1):
            raise ValueError("block must be a power of two >= 2")


def check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError("density must be in (0, 1]")


class SparseAttention(Accelerator):
    """Base of the sparse attention accelerators: one `SparseAttentionKernel` per denoiser."""

    slots = frozenset({SLOT_ATTENTION_KERNEL})

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        self._kernels: list[SparseAttentionKernel] = []

    @classmethod
    def unsupported_reason(cls, family) -> str | None:
        layout = LAYOUTS.get(family.name)
        if layout is None:
            return "no attention layout is known for this family, so its attention cannot be routed"
        if layout.block_axes:
            return ("its attention is factorised into short per-frame and per-position sequences, "
                    "where block sparsity saves next to nothing")
        return None

    def pattern(self) -> Pattern:
        """A fresh pattern for one denoiser."""
        raise NotImplementedError

    def apply(self, denoiser):
        """Nothing to hook here: the kernel reaches the denoiser through the attention seam."""

    def attention_kernel(self, inner):
        c = self.config
        kernel = SparseAttentionKernel(self.pattern(), dense_layers=c.dense_layers, dense_steps=c.dense_steps,
                                       block_size=c.block, inner=inner)
        self._kernels.append(kernel)
        return kernel

    def uninstall(self) -> None:
        super().uninstall()
        self._kernels.clear()

    def reset(self) -> None:
        for kernel in self._kernels:
            kernel.reset_stats()

    def stats(self):
        figures = [kernel.stats() for kernel in self._kernels]
        if len(figures) == 1:
            return figures[0]
        return {"denoisers": figures}
