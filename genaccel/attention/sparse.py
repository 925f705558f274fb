"""The sparse attention kernel: a pattern on the block-sparse engine, dense where sparsity does not pay.

`SparseAttentionKernel(pattern)` is a seam kernel. It runs the inner (dense) kernel for the first
`dense_layers` self-attention layers and the first `dense_steps` denoising steps (where the published
methods keep full attention: early steps fix the layout, first layers mix globally), for calls without a
latent grid or video tokens, and otherwise asks the pattern for a `BlockPlan` and runs it on
`BlockSparseAttention`. A plan that keeps every block, or more than `max_density` of them (where flex
attention is no faster than dense SDPA), runs the inner kernel instead: exact, and never slower. It
records the density that ran per layer and per step; these figures survive the
per-generation `reset()` (which only clears the pattern's state) and are cleared by `reset_stats()`.
"""

from __future__ import annotations

from collections import defaultdict

from .flex import BlockSparseAttention
from .kernels import AttentionContext, dense_kernel
from .layouts import tokens_in
from .patterns import Pattern


class SparseAttentionKernel:
    def __init__(
        self,
        pattern: Pattern,
        *,
        dense_layers: int = 1,
        dense_steps: int = 0,
        block_size: int = 128,
        max_density: float = 1.0,
        compile="auto",
        inner=dense_kernel,
    ):
        self.pattern = pattern
        self.max_density = max_density
        self.dense_layers = dense_layers
        self.dense_steps = dense_steps
        self.engine = BlockSparseAttention(block_size=block_size, compile=compile)
        self.inner = inner
        self.reset_stats()

    def reset(self) -> None:
        self.pattern.reset()

    def reset_stats(self) -> None:
        self.engine.reset_stats()
        self.pattern.reset_stats()
        self.dense_calls = 0
        self._sparse = [0.0, 0]  # density sum, calls of the calls that ran sparse
        self._by_layer = defaultdict(lambda: [0.0, 0])  # layer -> [density sum, calls]
        self._by_step = defaultdict(lambda: [0.0, 0])

    def _record(self, context: AttentionContext, density: float) -> None:
        for table, key in ((self._by_layer, context.layer), (self._by_step, context.step)):
            table[key][0] += density
            table[key][1] += 1

    def _dense(self, context: AttentionContext) -> bool:
        if context.layer < self.dense_layers or (context.step is not None and context.step < self.dense_steps):
            return True
        n = context.video[1] - context.video[0]
        return n == 0 or context.grid is None or tokens_in(context.grid, context.axes) != n

    def __call__(self, q, k, v, context: AttentionContext):
        if self._dense(context):
            self.dense_calls += 1
            self._record(context, 1.0)
            return self.inner(q, k, v, context)
        plan, key = self.pattern.plan(q, k, v, context, self.engine.block_size)
        if plan.full or plan.density > self.max_density:
            # nothing to skip, or too little for flex attention to beat dense SDPA: the inner kernel is exact
            # and at least as fast
            self._record(context, 1.0)
            return self.inner(q, k, v, context)
        masked = self.engine.calls["dense_masked"]
        out = self.engine(q, k, v, context, plan, key)
        if self.engine.calls["dense_masked"] > masked:  # the family's mask made the engine run dense
            self._record(context, 1.0)
        else:
            self._sparse[0] += plan.density
            self._sparse[1] += 1
            self._record(context, plan.density)
        return out

    def stats(self) -> dict:
        """density: mean fraction of video block pairs computed over all calls (dense ones count 1.0);
        sparse_density: the same over the sparse calls; by_layer / by_step: mean density per layer / step;
        path: which flex path ran ("compiled", "eager", "mixed", None); calls per path."""

        def means(table):
            ordered = sorted(table.items(), key=lambda item: (item[0] is None, item[0] or 0))
            return {key: round(total / calls, 4) for key, (total, calls) in ordered}

        calls = sum(c for _, c in self._by_layer.values())
        total = sum(t for t, _ in self._by_layer.values())
        return {
            "path": self.engine.path(),
            "calls": {"dense": self.dense_calls, **self.engine.calls},
            "density": round(total / calls, 4) if calls else None,
            "sparse_density": round(self._sparse[0] / self._sparse[1], 4) if self._sparse[1] else None,
            "by_layer": means(self._by_layer),
            "by_step": means(self._by_step),
            **self.pattern.stats(),
        }
