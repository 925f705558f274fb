"""Asymmetric token reduction at the attention call (AsymRnR), as a seam kernel around the attention kernel.

`AsymmetricReductionKernel(inner, ...)` receives q, k, v (B, H, S, D) after the family's projections, norms
and rotary embeddings, so positions are already in the features and stay exact. Of the video tokens it
merges a share of the queries (matched on q) and, separately, a share of the keys and values (merged
together, matched on v); text tokens are never touched. The inner kernel attends the reduced queries to
the reduced keys, with each merged key weighted by how many tokens it stands for (log-size bias, so a key
merged from three tokens gets the attention three would). Every merged query's output is then restored
from its destination's. Matches are kept per layer and CFG branch for `interval` steps.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch

from genaccel.attention.kernels import AttentionContext, dense_kernel
from genaccel.attention.layouts import tokens_in

from .matching import TokenMatch, cell_partition, match, merge, unmerge


def _fold(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    return x.permute(0, 2, 1, 3).flatten(2)


def _unfold(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D)."""
    return x.unflatten(2, (heads, -1)).permute(0, 2, 1, 3)


def _splice(x: torch.Tensor, video: tuple[int, int], part: torch.Tensor) -> torch.Tensor:
    """x (B, H, S, D) with its video tokens replaced by `part` (B, H, N', D)."""
    return torch.cat([x[:, :, : video[0]], part, x[:, :, video[1] :]], 2)


class AsymmetricReductionKernel:
    def __init__(
        self,
        inner=dense_kernel,
        *,
        q_ratio: float = 0.3,
        kv_ratio: float = 0.3,
        cell: tuple[int, int, int] = (2, 2, 2),
        interval: int = 4,
        dense_steps: int = 0,
        schedule=None,
        seed: int = 0,
        min_tokens: int = 0,
    ):
        self.inner = inner
        self.q_ratio, self.kv_ratio = q_ratio, kv_ratio
        self.cell = tuple(cell)
        self.interval = interval
        self.dense_steps = dense_steps
        self.schedule = schedule  # optional (layer, step) -> (q_ratio, kv_ratio)
        self.seed = seed
        self.min_tokens = min_tokens  # shorter calls run unreduced: matching would cost more than it saves
        self.reset()
        self.reset_stats()

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        self._matches: dict = {}  # (layer name, branch, sample) -> (step, q match, kv match)
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()

    def reset_stats(self) -> None:
        self._tokens = defaultdict(lambda: [0, 0, 0])  # (layer, step) -> [video tokens, queries kept, keys kept]
        self.matched = 0
        self.reused = 0

    def stats(self) -> dict:
        """tokens: per layer and step, video tokens before and queries / keys after reduction; q_kept and
        kv_kept: the shares kept over all calls; matched / reused: calls that computed / reused a match."""
        total = [sum(v[i] for v in self._tokens.values()) for i in range(3)]
        return {
            "q_kept": round(total[1] / total[0], 4) if total[0] else None,
            "kv_kept": round(total[2] / total[0], 4) if total[0] else None,
            "matched": self.matched,
            "reused": self.reused,
            "tokens": {
                f"{layer}/{step}": tuple(v)
                for (layer, step), v in sorted(
                    self._tokens.items(), key=lambda item: (item[0][0], item[0][1] if item[0][1] is not None else -1)
                )
            },
        }

    # ------------------------------------------------------------------------------------------ call
    def _ratios(self, context: AttentionContext) -> tuple[float, float]:
        if context.step is not None and context.step < self.dense_steps:
            return 0.0, 0.0
        if self.schedule is not None:
            return self.schedule(context.layer, context.step)
        return self.q_ratio, self.kv_ratio

    def _match(self, q, v, context: AttentionContext, q_ratio: float, kv_ratio: float):
        key = (context.name, context.branch, context.sample)
        step = context.step or 0
        known = self._matches.get(key)
        v0, v1 = context.video
        n = v1 - v0
        rq, rkv = round(q_ratio * n), round(kv_ratio * n)
        if known is not None and step - known[0] < self.interval and known[1].n == n:
            self.reused += 1
            # a schedule may change the ratios between steps: same matching, another cut
            return known[1].recut(rq), known[2].recut(rkv)
        generator = torch.Generator().manual_seed(self.seed + context.layer)
        dst, src = cell_partition(context.grid, self.cell, generator)
        q_match = match(_fold(q[:, :, v0:v1]), dst, src, rq)
        kv_match = match(_fold(v[:, :, v0:v1]), dst, src, rkv, distance="euclidean")
        self._matches[key] = (step, q_match, kv_match)
        self.matched += 1
        return q_match, kv_match

    def _key_bias(self, kv_match: TokenMatch, context: AttentionContext, length: int, q) -> torch.Tensor:
        """Additive (B, 1, 1, S') bias over the reduced keys: log(size) of merged video keys, the family's
        key-padding mask as -inf."""
        v0, v1 = context.video
        batch = q.shape[0]
        sizes = kv_match.sizes().to(q.device, torch.float32)
        bias = torch.zeros(batch, length, device=q.device, dtype=torch.float32)
        bias[:, v0 : v0 + sizes.shape[1]] = sizes.log()
        mask = context.attn_mask
        if mask is not None:
            if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
                raise ValueError("token reduction supports only (B, 1, 1, S) boolean key-padding masks")
            hidden = ~mask[:, 0, 0, :].expand(batch, -1)
            positions = kv_match.positions().to(hidden.device)
            hidden = torch.cat([hidden[:, :v0], hidden[:, v0:v1].gather(1, positions), hidden[:, v1:]], 1)
            bias = bias.masked_fill(hidden, float("-inf"))
        return bias[:, None, None, :].to(q.dtype)

    def _count(self, context: AttentionContext, n: int, queries: int, keys: int) -> None:
        record = self._tokens[(context.layer, context.step)]
        record[0] += n
        record[1] += queries
        record[2] += keys

    def __call__(self, q, k, v, context: AttentionContext):
        v0, v1 = context.video
        n = v1 - v0
        q_ratio, kv_ratio = self._ratios(context)
        structured = context.grid is not None and "f" in context.axes and tokens_in(context.grid, context.axes) == n
        if not structured or (q_ratio <= 0 and kv_ratio <= 0) or n == 0 or n < self.min_tokens:
            self._count(context, n, n, n)
            return self.inner(q, k, v, context)
        q_match, kv_match = self._match(q, v, context, q_ratio, kv_ratio)
        heads = q.shape[1]
        q_video = _unfold(merge(_fold(q[:, :, v0:v1]), q_match), heads)
        k_video = _unfold(merge(_fold(k[:, :, v0:v1]), kv_match), heads)
        v_video = _unfold(merge(_fold(v[:, :, v0:v1]), kv_match), heads)
        q_r, k_r, v_r = _splice(q, (v0, v1), q_video), _splice(k, (v0, v1), k_video), _splice(v, (v0, v1), v_video)
        bias = self._key_bias(kv_match, context, k_r.shape[2], q)
        # the reduced sequences have no grid any more; queries and keys differ in length
        inner_context = dataclasses.replace(context, video=(v0, v0 + q_video.shape[2]), grid=None, attn_mask=bias)
        out = self.inner(q_r, k_r, v_r, inner_context)
        n_q = q_video.shape[2]
        video_out = _unfold(unmerge(_fold(out[:, :, v0 : v0 + n_q]), q_match), heads)
        self._count(context, n, n_q, k_video.shape[2])
        return _splice(out, (v0, v0 + n_q), video_out)
