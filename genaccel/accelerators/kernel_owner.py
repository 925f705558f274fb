"""The base of accelerators that own the attention kernel (sparse attention, token reduction).

They hook nothing themselves: `Acceleration` asks each for a kernel per denoiser (`attention_kernel`),
nests them in `KERNEL_NESTING` order and installs the result behind the attention seam
(genaccel/attention/). This base keeps the kernels for their figures and says where the seam cannot help.
"""

from __future__ import annotations

from typing import ClassVar

from genaccel.accelerators.base import Accelerator
from genaccel.attention.layouts import LAYOUTS


def seam_unsupported_reason(family, factorised_reason: str) -> str | None:
    """Why a method acting on self-attention's video tokens cannot run on `family`: no known attention
    layout, or attention factorised into short sequences (where `factorised_reason` says what is lost)."""
    layout = LAYOUTS.get(family.name)
    if layout is None:
        return "no attention layout is known for this family, so its attention cannot be routed"
    if layout.block_axes:
        return f"its attention is factorised into short per-frame and per-position sequences, {factorised_reason}"
    return None


class KernelOwner(Accelerator):
    # Why the method gains nothing on factorised attention (Latte's short per-frame / per-position calls).
    factorised_reason: ClassVar[str]

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        self._kernels: list = []

    @classmethod
    def unsupported_reason(cls, family) -> str | None:
        return seam_unsupported_reason(family, cls.factorised_reason)

    def make_kernel(self, inner):
        """A fresh kernel for one denoiser, around `inner`."""
        raise NotImplementedError

    def attention_kernel(self, inner):
        kernel = self.make_kernel(inner)
        self._kernels.append(kernel)
        return kernel

    def apply(self, denoiser):
        """Nothing to hook here: the kernel reaches the denoiser through the attention seam."""

    def uninstall(self) -> None:
        super().uninstall()
        self._kernels.clear()

    def reset(self) -> None:
        for kernel in self._kernels:
            kernel.reset_stats()

    def stats(self):
        figures = [kernel.stats() for kernel in self._kernels]
        return figures[0] if len(figures) == 1 else {"denoisers": figures}
