"""Block-sparse attention behind the seam: FlexAttention with masks built from block tables.

`BlockSparseKernel(block_table_fn)` is a seam kernel (`kernel(q, k, v, context) -> out`, (B, H, S, D)). Per call:

1. The sequence is laid out as [video tokens | padding | other tokens | padding], each part padded to a
   multiple of the block size, so block i of the video part is video tokens [i*bs, (i+1)*bs) whatever the
   family's text placement. Padding keys are masked out and padded query rows dropped.
2. `block_table_fn(num_blocks, context)` gives the kept (query block, key block) pairs among the
   `num_blocks` video blocks: a bool tensor (H or 1, num_blocks, num_blocks). Blocks holding other tokens
   (text) attend and are attended densely.
3. The table becomes a `BlockMask` (`BlockMask.from_kv_blocks`) together with a `mask_mod` encoding the same
   table and the padding: uncompiled flex attention ignores the block table and runs a dense reference
   that applies only the `mask_mod`. Masks are cached per (shape, table key).
4. flex attention runs compiled (`torch.compile(flex_attention, dynamic=False)`, created once at module
   level) where possible: on CUDA, or on a CPU with AVX2, without gradients. Otherwise, or when compiling
   fails (logged once), the eager path runs: correct, but dense in cost.

Rule: nothing here builds a dense (query x key) mask; block tables are (blocks x blocks) only.

Tables: `full_table` (density 1.0, equals dense attention) and `local_frames_table(window)` (blocks whose
token frames are within `window` frames) as a simple example pattern.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .kernels import AttentionContext, dense_kernel
from .layouts import AXES

logger = logging.getLogger(__name__)

# Compiled once at module level; torch.compile is lazy, so nothing compiles until the first compiled call.
# dynamic=False: one specialisation per shape (the masks are cached per shape as well).
_COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
_COMPILE_FAILED: str | None = None  # reason, once compiling failed in this process (then eager everywhere)


def _cpu_can_compile() -> bool:
    """The compiled CPU flex template needs AVX2 (or better)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def full_table(num_blocks: int, context: AttentionContext) -> torch.Tensor:
    """Every block kept (density 1.0): the kernel then equals dense attention."""
    return torch.ones(1, num_blocks, num_blocks, dtype=torch.bool)


def token_frames(context: AttentionContext, num_tokens: int) -> torch.Tensor:
    """Latent frame of each video token of the call, (num_tokens,) int64. The video tokens span
    `context.axes` of `context.grid` in sequence order; calls that do not span "f" (Latte's spatial calls)
    are one frame."""
    if context.grid is None or "f" not in context.axes:
        return torch.zeros(num_tokens, dtype=torch.long)
    sizes = [context.grid[AXES.index(a)] for a in context.axes]
    inner = math.prod(sizes[context.axes.index("f") + 1:])  # tokens per frame step in sequence order
    return (torch.arange(num_tokens) // inner) % context.grid[AXES.index("f")]


def local_frames_table(window: int):
    """Pattern: keep a (query block, key block) pair when some query token and some key token in them are at
    most `window` latent frames apart (frames from `context.grid` / `context.axes`). window=0: attention
    within the same frames only. Block size is read from the table's `block_size` attribute, set by the
    kernel. Returns a `block_table_fn`."""

    def table(num_blocks: int, context: AttentionContext) -> torch.Tensor:
        bs = table.block_size
        n = context.video[1] - context.video[0]
        frames = token_frames(context, n)
        frames = F.pad(frames, (0, num_blocks * bs - n), value=int(frames[-1]) if n else 0).view(num_blocks, bs)
        lo, hi = frames.min(1).values, frames.max(1).values  # frame range of each block
        # the ranges [lo_q, hi_q] and [lo_k - window, hi_k + window] intersect
        keep = (lo[:, None] <= hi[None, :] + window) & (lo[None, :] - window <= hi[:, None])
        return keep[None]

    table.block_size = 128
    table.key = ("local_frames", window)
    return table


@dataclass
class _Layout:
    """Where the video and other tokens sit in the padded sequence (all in tokens)."""

    video: tuple[int, int]  # [start, end) in the family's sequence
    length: int  # family's sequence length
    video_padded: int  # padded length of the video part
    padded: int  # total padded length


class BlockSparseKernel:
    """Seam kernel: flex attention with a block-sparse mask over the video tokens (see the module docstring).

    block_table_fn(num_blocks, context) -> bool (H or 1, num_blocks, num_blocks) over the video blocks.
      Optional attributes: `key` (hashable, identifies the pattern for the mask cache; default: the function
      itself) and `block_size` (set to this kernel's block size). The table may depend only on the number
      of blocks and the context's grid / axes / video range (these form the cache key with the shape).
    block_size: query and key block size (128, the compiled templates' default).
    compile: "auto" (compile where possible, else eager; a failure is logged once), True (always compile,
      errors raise) or False (eager: correct, dense in cost).
    """

    def __init__(self, block_table_fn, block_size: int = 128, compile="auto"):
        if compile not in ("auto", True, False):
            raise ValueError(f"compile must be 'auto', True or False, not {compile!r}")
        self.block_table_fn = block_table_fn
        self.block_size = block_size
        self.compile = compile
        if hasattr(block_table_fn, "block_size"):
            block_table_fn.block_size = block_size
        self._masks: dict = {}
        self.reset_stats()

    # ---------------------------------------------------------------------------------------------- stats
    def reset_stats(self) -> None:
        self._calls = {"compiled": 0, "eager": 0, "dense_masked": 0}
        self._density_sum = 0.0
        self._video_density_sum = 0.0

    def stats(self) -> dict:
        """path: "compiled", "eager", "mixed" or None (no call yet); calls per path (dense_masked: calls with
        the family's own attention mask, which run dense SDPA); density: mean fraction of (query block, key
        block) pairs computed, over the whole padded sequence; video_density: the same over the video table."""
        sparse = self._calls["compiled"] + self._calls["eager"]
        ran = [p for p in ("compiled", "eager") if self._calls[p]]
        return {
            "path": ran[0] if len(ran) == 1 else ("mixed" if ran else None),
            "calls": dict(self._calls),
            "density": self._density_sum / sparse if sparse else None,
            "video_density": self._video_density_sum / sparse if sparse else None,
            "compile_failed": _COMPILE_FAILED,
        }

    # ---------------------------------------------------------------------------------------------- masks
    def _layout(self, context: AttentionContext, length: int) -> _Layout:
        v0, v1 = context.video
        bs = self.block_size
        video_padded = -(-(v1 - v0) // bs) * bs
        other = length - (v1 - v0)
        return _Layout((v0, v1), length, video_padded, video_padded + -(-other // bs) * bs)

    def _mask(self, layout: _Layout, heads: int, context: AttentionContext, device) -> tuple[BlockMask, float, float]:
        key = (layout.video, layout.length, heads, str(device),
               getattr(self.block_table_fn, "key", self.block_table_fn), context.grid, context.axes)
        if key in self._masks:
            return self._masks[key]
        bs = self.block_size
        nv, n = layout.video_padded // bs, layout.padded // bs
        video = self.block_table_fn(nv, context).to(torch.bool)
        if video.dim() != 3 or video.shape[1:] != (nv, nv) or video.shape[0] not in (1, heads):
            raise ValueError(f"block table must be (1 or {heads}, {nv}, {nv}), got {tuple(video.shape)}")
        table = torch.ones(video.shape[0], n, n, dtype=torch.bool)
        table[:, :nv, :nv] = video  # text rows and columns stay dense
        table = table.to(device)

        # valid[j]: padded position j holds a real token (video part, then the other tokens)
        v_len = layout.video[1] - layout.video[0]
        pos = torch.arange(layout.padded, device=device)
        other_end = layout.video_padded + layout.length - v_len
        valid = (pos < v_len) | ((pos >= layout.video_padded) & (pos < other_end))
        block_has_pad = ~valid.view(n, bs).all(1)

        per_head = table.shape[0] > 1

        def mask_mod(b, h, q_idx, kv_idx):
            return table[h if per_head else 0, q_idx // bs, kv_idx // bs] & valid[kv_idx]

        def as_kv(m):  # (H, n, n) bool -> counts (1, H, n) and indices (1, H, n, n), kept blocks first
            num = m.sum(-1, dtype=torch.int32)
            idx = torch.argsort((~m).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
            return num[None].contiguous(), idx[None].contiguous()

        partial = table & block_has_pad[None, None, :]  # blocks with padding keys evaluate the mask_mod
        full = table & ~block_has_pad[None, None, :]
        kv_num, kv_idx = as_kv(partial)
        full_num, full_idx = as_kv(full)
        mask = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=bs, mask_mod=mask_mod,
                                        seq_lengths=(layout.padded, layout.padded), compute_q_blocks=False)
        entry = (mask, table.float().mean().item(), video.float().mean().item())
        self._masks[key] = entry
        return entry

    # ------------------------------------------------------------------------------------------- call
    def _to_blocks(self, x: torch.Tensor, layout: _Layout) -> torch.Tensor:
        v0, v1 = layout.video
        parts = [x[:, :, v0:v1], x.new_zeros(*x.shape[:2], layout.video_padded - (v1 - v0), x.shape[3])]
        other = torch.cat([x[:, :, :v0], x[:, :, v1:]], 2)
        parts += [other, x.new_zeros(*x.shape[:2], layout.padded - layout.video_padded - other.shape[2], x.shape[3])]
        return torch.cat(parts, 2)

    def _from_blocks(self, o: torch.Tensor, layout: _Layout) -> torch.Tensor:
        v0, v1 = layout.video
        vp = layout.video_padded
        other = o[:, :, vp:vp + layout.length - (v1 - v0)]
        return torch.cat([other[:, :, :v0], o[:, :, :v1 - v0], other[:, :, v0:]], 2)

    def _use_compiled(self, q: torch.Tensor) -> bool:
        if self.compile is False or (self.compile == "auto" and _COMPILE_FAILED):
            return False
        possible = (q.device.type == "cuda" or (q.device.type == "cpu" and _cpu_can_compile())) and not (
            torch.is_grad_enabled() and q.requires_grad)
        if self.compile is True and not possible:
            raise RuntimeError("compiled flex attention needs CUDA or an AVX2 CPU, and inference only on CPU")
        return possible

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        global _COMPILE_FAILED
        if context.attn_mask is not None:  # the family's own mask: not expressible as our block table
            self._calls["dense_masked"] += 1
            return dense_kernel(q, k, v, context)
        layout = self._layout(context, q.shape[2])
        mask, density, video_density = self._mask(layout, q.shape[1], context, q.device)
        qb, kb, vb = (self._to_blocks(x, layout) for x in (q, k, v))
        out = None
        if self._use_compiled(q):
            try:
                out = _COMPILED_FLEX(qb, kb, vb, block_mask=mask)
                self._calls["compiled"] += 1
            except Exception as error:  # noqa: BLE001 - any compile failure falls back to the eager path
                if self.compile is True:
                    raise
                _COMPILE_FAILED = f"{type(error).__name__}: {error}"[:500]
                logger.warning("genaccel: compiled flex attention failed, using the eager (dense-cost) path "
                               "from now on: %s", _COMPILE_FAILED)
        if out is None:
            out = flex_attention(qb, kb, vb, block_mask=mask)
            self._calls["eager"] += 1
        self._density_sum += density
        self._video_density_sum += video_density
        return self._from_blocks(out, layout)
