"""The attention kernel interface of the seam, and the dense kernel.

A kernel is any callable `kernel(q, k, v, context) -> out` with q, k, v and out in the canonical layout
(B, H, S, D) and `context` an `AttentionContext`. A kernel that keeps per-generation state gives it a
`reset()` method; the seam calls it at every generation start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionContext:
    """What one attention call is: where the video tokens are and where the generation is."""

    video: tuple[int, int]  # [start, end) of the video tokens along S (queries and keys alike)
    grid: tuple[int, int, int] | None  # (frames, height, width) latent token grid of the denoiser call
    axes: tuple[str, ...]  # grid axes the video tokens span, in sequence order (("f", "h", "w"): whole grid)
    layer: int  # index of the module among its denoiser's self-attention layers
    name: str  # the module's qualified name inside the denoiser, e.g. "blocks.3.attn1"
    step: int | None = None  # the Runtime's step index within the CFG branch (None without a Runtime)
    branch: str | None = None  # the Runtime's CFG branch ("cond", "uncond", "cond_uncond")
    attn_mask: torch.Tensor | None = None  # the family's mask, as its own call would give it to SDPA
    sample: int | None = None  # batch index, when the family attends one sample at a time (Mochi)


class AttentionKernel(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: AttentionContext
    ) -> torch.Tensor: ...


def dense_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: AttentionContext) -> torch.Tensor:
    """Dense attention with torch SDPA: what every family computes at its own attention call on CPU."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=context.attn_mask, dropout_p=0.0, is_causal=False)
