"""Block-causal attention over latent frames: the attention of a chunked, autoregressive video model.

The video's latent frames are cut into chunks of `chunk_frames`; a video token attends every token of its
own chunk (bidirectional inside it) and of every earlier chunk, never a later one. Text tokens in a joint
sequence attend and are attended by everything. This is the mask a block-causal model is trained with
(the first step of streaming generation, issue 19) and the one its whole-clip forward uses; streaming then
replaces the earlier chunks' part by a key/value cache.

`block_causal_mask(context, length)` builds the boolean (S, S) mask for one attention call;
`BlockCausalKernel` is a seam kernel that applies it around an inner kernel (dense SDPA by default).
"""

from __future__ import annotations

import dataclasses

import torch

from .kernels import AttentionContext, dense_kernel
from .layouts import tokens_in
from .patterns import token_coords


def block_causal_mask(context: AttentionContext, length: int, chunk_frames: int) -> torch.Tensor | None:
    """(S, S) bool, True where a query may attend a key; None when the call's video tokens do not span the
    frames of a known grid (nothing causal to enforce)."""
    v0, v1 = context.video
    n = v1 - v0
    if context.grid is None or "f" not in context.axes or tokens_in(context.grid, context.axes) != n:
        return None
    chunk = token_coords(context, n)[:, 0] // chunk_frames  # (n,) chunk of each video token
    allowed = torch.ones(length, length, dtype=torch.bool)
    allowed[v0:v1, v0:v1] = chunk[:, None] >= chunk[None, :]
    return allowed


class BlockCausalKernel:
    """Seam kernel: `inner` attention under the block-causal mask (joined with the family's own mask)."""

    def __init__(self, chunk_frames: int, inner=dense_kernel):
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        self.chunk_frames = chunk_frames
        self.inner = inner
        self._masks: dict = {}

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()

    def __call__(self, q, k, v, context: AttentionContext):
        if k.shape[2] != q.shape[2]:  # keys beyond the call's own come from a KV cache of earlier chunks
            return self.inner(q, k, v, context)
        key = (context.video, context.grid, context.axes, q.shape[2], str(q.device))
        if key not in self._masks:
            mask = block_causal_mask(context, q.shape[2], self.chunk_frames)
            self._masks[key] = None if mask is None else mask.to(q.device)
        mask = self._masks[key]
        if mask is None:
            return self.inner(q, k, v, context)
        family_mask = context.attn_mask
        if family_mask is not None:
            if family_mask.dtype == torch.bool:
                mask = mask & family_mask
            else:  # an additive mask: keep it, and forbid the future on top
                mask = family_mask.masked_fill(~mask, float("-inf"))
        return self.inner(q, k, v, dataclasses.replace(context, attn_mask=mask))
