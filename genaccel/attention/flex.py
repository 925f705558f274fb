"""Block-sparse attention with FlexAttention: the engine behind every sparse attention kernel.

`BlockSparseAttention()(q, k, v, context, plan)` runs attention on (B, H, S, D) tensors, computing only the
(query block, key block) pairs a `BlockPlan` keeps among the video tokens. Per call:

1. The video tokens are put in the plan's `order` (per head, or shared), and the sequence is laid out as
   [video tokens | padding | other tokens | padding], each part padded to a multiple of the block size, so
   block i of the video part is positions [i*bs, (i+1)*bs) of the ordered video tokens whatever the
   family's text placement. Padding keys are masked out and padded query rows dropped.
2. `plan.table` (bool, (H or 1, nv, nv)) says which video block pairs are computed. Blocks holding other
   tokens (text) attend and are attended densely.
3. The table becomes a `BlockMask` (`BlockMask.from_kv_blocks`) together with a `mask_mod` encoding the same
   table and the padding: uncompiled flex attention ignores the block table and runs a dense reference that
   applies only the `mask_mod`. A family's key-padding mask (HunyuanVideo's text padding, (B, 1, 1, S)
   bool) joins the padding; any other mask runs dense SDPA. Masks of static plans are cached per key.
4. flex attention runs compiled (`torch.compile(flex_attention, dynamic=False)`, created once at module
   level) where possible: on CUDA, or on a CPU with AVX2, without gradients. Otherwise, or when compiling
   fails (logged once), the eager path runs: correct, but dense in cost. `stats()` says which path ran.

Rule: nothing here builds a dense (query x key) mask; block tables are (blocks x blocks) only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .kernels import AttentionContext, dense_kernel

logger = logging.getLogger(__name__)

# Compiled once at module level; torch.compile is lazy, so nothing compiles until the first compiled call.
# dynamic=False: one specialisation per shape (masks of one shape share the compiled code).
_COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
_COMPILED_SHAPES: set = set()  # shapes already compiled in this process (for the one-time note)
_MAX_MASKS = 64  # cached block masks per engine
_COMPILE_FAILED: str | None = None  # reason, once compiling failed in this process (then eager everywhere)


def _cpu_can_compile() -> bool:
    """The compiled CPU flex template needs AVX2 (or better)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def compile_failure() -> str | None:
    """Why compiled flex attention failed in this process, or None."""
    return _COMPILE_FAILED


@dataclass(eq=False)
class BlockPlan:
    """Which video block pairs one attention call computes.

    table: bool (H or 1, nv, nv) over the video blocks (in `order`); nv = ceil(video tokens / block size).
    order: long (H or 1, n): the video token (0..n-1, sequence order) at each position, or None (sequence
      order). Queries and keys are ordered alike; the output comes back in sequence order.

    A plan is immutable: its density, whether it is full, and its order's copy on each device are computed
    once, so a cached plan costs no small host-side tensor operations per call (on a GPU host those can
    cost milliseconds each).
    """

    table: torch.Tensor
    order: torch.Tensor | None = None

    def __post_init__(self):
        self._orders: dict = {}

    @cached_property
    def density(self) -> float:
        return self.table.float().mean().item()

    @cached_property
    def full(self) -> bool:
        return bool(self.table.all())

    def order_on(self, device: torch.device) -> torch.Tensor | None:
        """`order` on `device` (copied once per device)."""
        if self.order is None:
            return None
        key = str(device)
        if key not in self._orders:
            self._orders[key] = self.order.to(device)
        return self._orders[key]


@dataclass(frozen=True)
class _Layout:
    """Where the video and other tokens sit in the padded sequence (all in tokens)."""

    video: tuple[int, int]  # [start, end) in the family's sequence
    length: int  # family's sequence length
    video_padded: int  # padded length of the video part
    padded: int  # total padded length


def _key_padding(mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None | bool:
    """A family mask that only hides keys, as (B, S) bool (True: attend); None without a mask; False when
    the mask is something else (then the call runs dense)."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        return False
    if mask.shape[3] != length or mask.shape[0] not in (1, batch):
        return False
    return mask[:, 0, 0, :].expand(batch, length)


class BlockSparseAttention:
    """Runs block-sparse attention for a `BlockPlan` (see the module docstring); keeps path figures.

    block_size: query and key block size in tokens (128, the compiled templates' default).
    compile: "auto" (compile where possible, else eager; a failure is logged once), True (always compile,
      errors raise) or False (eager: correct, dense in cost).
    """

    def __init__(self, block_size: int = 128, compile="auto"):
        if compile not in ("auto", True, False):
            raise ValueError(f"compile must be 'auto', True or False, not {compile!r}")
        if block_size < 2 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 2, not {block_size}")
        self.block_size = block_size
        self.compile = compile
        self._masks: dict = {}
        self._warned_recompile = False
        self.reset_stats()

    # ---------------------------------------------------------------------------------------------- stats
    def reset_stats(self) -> None:
        self.calls = {"compiled": 0, "eager": 0, "dense_masked": 0}

    def path(self) -> str | None:
        """ "compiled", "eager", "mixed" or None (no sparse call yet)."""
        ran = [p for p in ("compiled", "eager") if self.calls[p]]
        return ran[0] if len(ran) == 1 else ("mixed" if ran else None)

    # ---------------------------------------------------------------------------------------------- masks
    def layout(self, video: tuple[int, int], length: int) -> _Layout:
        v0, v1 = video
        bs = self.block_size
        video_padded = -(-(v1 - v0) // bs) * bs
        other = length - (v1 - v0)
        return _Layout((v0, v1), length, video_padded, video_padded + -(-other // bs) * bs)

    def num_blocks(self, video_tokens: int) -> int:
        return -(-video_tokens // self.block_size)

    def _block_mask(
        self, layout: _Layout, video: torch.Tensor, keys: torch.Tensor | None, batch: int, heads: int, device
    ) -> BlockMask:
        """BlockMask of the whole padded sequence from the video table (H or 1, nv, nv) and the key padding
        (B, S) of the family's mask (None: none)."""
        bs = self.block_size
        nv, n = layout.video_padded // bs, layout.padded // bs
        # The mask_mod's tensors always have these shapes ((H, n, n) and (B, padded)) so that one compiled
        # specialisation per call shape serves every table: dynamo guards on the shapes of captured tensors.
        table = torch.ones(heads, n, n, dtype=torch.bool, device=device)
        table[:, :nv, :nv] = video.to(device)  # text rows and columns stay dense

        # valid[b, j]: padded position j holds a real, attendable key for sample b
        v0, v1 = layout.video
        pos = torch.arange(layout.padded, device=device)
        other_end = layout.video_padded + layout.length - (v1 - v0)
        valid = ((pos < v1 - v0) | ((pos >= layout.video_padded) & (pos < other_end)))[None].expand(batch, -1)
        if keys is not None:
            valid = valid & self._to_blocks(keys[:, None, :, None].to(device), layout, None)[:, 0, :, 0]
        valid = valid.contiguous()
        block_has_pad = ~valid.view(batch, n, bs).all(-1)  # (B, n)

        def mask_mod(b, h, q_idx, kv_idx):
            return table[h, q_idx // bs, kv_idx // bs] & valid[b, kv_idx]

        def as_kv(m):  # (B, H, n, n) bool -> counts (B, H, n) and indices (B, H, n, n), kept blocks first
            num = m.sum(-1, dtype=torch.int32)
            idx = torch.argsort((~m).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
            return num.contiguous(), idx.contiguous()

        partial = table[None] & block_has_pad[:, None, None, :]  # blocks with padding keys evaluate the mask_mod
        full = table[None] & ~block_has_pad[:, None, None, :]
        kv_num, kv_idx = as_kv(partial)
        full_num, full_idx = as_kv(full)
        return BlockMask.from_kv_blocks(
            kv_num,
            kv_idx,
            full_num,
            full_idx,
            BLOCK_SIZE=bs,
            mask_mod=mask_mod,
            seq_lengths=(layout.padded, layout.padded),
            compute_q_blocks=False,
        )

    # ------------------------------------------------------------------------------------------- layout
    def _to_blocks(self, x: torch.Tensor, layout: _Layout, order: torch.Tensor | None) -> torch.Tensor:
        v0, v1 = layout.video
        video = x[:, :, v0:v1]
        if order is not None:
            video = torch.gather(video, 2, order[None, :, :, None].expand(x.shape[0], x.shape[1], -1, x.shape[3]))
        parts = [video, x.new_zeros(*x.shape[:2], layout.video_padded - (v1 - v0), x.shape[3])]
        other = torch.cat([x[:, :, :v0], x[:, :, v1:]], 2)
        parts += [other, x.new_zeros(*x.shape[:2], layout.padded - layout.video_padded - other.shape[2], x.shape[3])]
        return torch.cat(parts, 2)

    def _from_blocks(self, o: torch.Tensor, layout: _Layout, order: torch.Tensor | None) -> torch.Tensor:
        v0, v1 = layout.video
        vp = layout.video_padded
        video = o[:, :, : v1 - v0]
        if order is not None:
            video = torch.empty_like(video).scatter_(
                2, order[None, :, :, None].expand(o.shape[0], o.shape[1], -1, o.shape[3]), video
            )
        other = o[:, :, vp : vp + layout.length - (v1 - v0)]
        return torch.cat([other[:, :, :v0], video, other[:, :, v0:]], 2)

    def _use_compiled(self, q: torch.Tensor) -> bool:
        if self.compile is False or (self.compile == "auto" and _COMPILE_FAILED):
            return False
        possible = (q.device.type == "cuda" or (q.device.type == "cpu" and _cpu_can_compile())) and not (
            torch.is_grad_enabled() and q.requires_grad
        )
        if self.compile is True and not possible:
            raise RuntimeError("compiled flex attention needs CUDA or an AVX2 CPU, and inference only on CPU")
        return possible

    # ------------------------------------------------------------------------------------------- call
    def __call__(self, q, k, v, context: AttentionContext, plan: BlockPlan, key=None) -> torch.Tensor:
        """Attention of q, k, v (B, H, S, D) computing the block pairs of `plan`. `key` (hashable) caches the
        mask of a static plan: equal keys promise equal plans for calls of the same shape."""
        global _COMPILE_FAILED
        keys = _key_padding(context.attn_mask, q.shape[0], k.shape[2])
        if keys is False:  # a family mask that is not key padding: not expressible as a block table
            self.calls["dense_masked"] += 1
            return dense_kernel(q, k, v, context)
        layout = self.layout(context.video, q.shape[2])
        order = plan.order_on(q.device)
        order = order.expand(q.shape[1], -1) if order is not None else None
        cache = None
        if key is not None:
            padding = None if keys is None else keys.cpu().numpy().tobytes()
            cache = (key, layout, q.shape[0], q.shape[1], str(q.device), padding)
        mask = self._masks.get(cache) if cache is not None else None
        if mask is None:
            mask = self._block_mask(layout, plan.table, keys, q.shape[0], q.shape[1], q.device)
            if cache is not None:
                if len(self._masks) >= _MAX_MASKS:  # shapes change rarely; bound the memory if they do not
                    self._masks.clear()
                self._masks[cache] = mask
        qb, kb, vb = (self._to_blocks(x, layout, order) for x in (q, k, v))
        out = None
        if self._use_compiled(q):
            try:
                # past dynamo's recompile limit a compiled function silently runs eager: make that an error
                shape = (tuple(qb.shape), str(qb.dtype), str(qb.device))
                if shape not in _COMPILED_SHAPES:
                    _COMPILED_SHAPES.add(shape)
                    logger.warning(
                        "compiling the sparse attention kernel for %s %s on %s (once per shape, 10-30 s on a CPU)",
                        *shape,
                    )
                with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                    out = _COMPILED_FLEX(qb, kb, vb, block_mask=mask)
                self.calls["compiled"] += 1
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                if not self._warned_recompile:
                    logger.warning(
                        "too many attention shapes for torch.compile's recompile limit; "
                        "calls of new shapes run the eager (dense-cost) flex path"
                    )
                    self._warned_recompile = True
            except Exception as error:  # noqa: BLE001 - any compile failure falls back to the eager path
                if self.compile is True:
                    raise
                _COMPILE_FAILED = f"{type(error).__name__}: {error}"[:500]
                logger.warning(
                    "compiled flex attention failed, using the eager (dense-cost) path from now on: %s", _COMPILE_FAILED
                )
        if out is None:
            out = flex_attention(qb, kb, vb, block_mask=mask)
            self.calls["eager"] += 1
        return self._from_blocks(out, layout, order)
