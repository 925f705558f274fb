"""Token matching for token reduction: bipartite soft matching with one destination per 3-D cell.

The math of token merging (ToMe) and asymmetric reduction (AsymRnR), for video tokens on a latent grid;
the accelerators wire it in. Tokens are split into destinations, one random token per (t, h, w) cell of the
grid, and sources, the rest. Every source is matched to its most similar destination; the `r` best-matched
sources are merged into their destinations (a mean, weighted by how many tokens each already stands for),
the others are kept. The reduced sequence is [kept sources | destinations], each part in sequence order.
`unmerge` gives every merged source its destination's value back, so merging then unmerging identical
tokens restores them exactly, and `r = 0` is the identity.

Shapes: x is (B, N, C) (a head dimension is folded into C by the callers); indices are per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cell_partition(grid: tuple[int, int, int], cell: tuple[int, int, int], generator: torch.Generator | None = None):
    """(destinations, sources): long indices into the frame-major token sequence of `grid`, one destination
    per `cell` (a random token inside it; cells at the borders may be partial), each in sequence order."""
    f, h, w = grid
    ct, ch, cw = cell
    index = torch.arange(f * h * w).view(f, h, w)
    cells = -(-f // ct), -(-h // ch), -(-w // cw)
    # a random offset inside each cell, clipped to the grid at partial border cells
    pick = [torch.randint(0, c, (n,), generator=generator) for c, n in zip(cell, cells)]
    ft = (torch.arange(cells[0]) * ct + pick[0]).clamp(max=f - 1)
    ht = (torch.arange(cells[1]) * ch + pick[1]).clamp(max=h - 1)
    wt = (torch.arange(cells[2]) * cw + pick[2]).clamp(max=w - 1)
    dst = index[ft[:, None, None], ht[None, :, None], wt[None, None, :]].flatten().unique(sorted=True)
    is_dst = torch.zeros(f * h * w, dtype=torch.bool)
    is_dst[dst] = True
    return dst, torch.nonzero(~is_dst).flatten()


@dataclass
class TokenMatch:
    """Which tokens of an N-token sequence merge into which (per sample)."""

    n: int  # tokens before reduction
    dst: torch.Tensor  # (Nd,) destination token indices
    src: torch.Tensor  # (Ns,) source token indices
    merged: torch.Tensor  # (B, r) positions in `src` of the merged sources
    into: torch.Tensor  # (B, r) positions in `dst` of their destinations
    kept: torch.Tensor  # (B, Ns - r) positions in `src` of the kept sources, in sequence order
    order: torch.Tensor | None = None  # (B, Ns) sources, best matched first (lets `recut` change r cheaply)
    choice: torch.Tensor | None = None  # (B, Ns) each source's best destination (position in `dst`)

    @property
    def r(self) -> int:
        return self.merged.shape[1]

    def positions(self) -> torch.Tensor:
        """(B, N - r): the original index of each token of the reduced sequence."""
        batch = self.kept.shape[0]
        return torch.cat([self.src[self.kept], self.dst[None].expand(batch, -1)], 1)

    def expand(self, batch: int) -> "TokenMatch":
        """A one-sample match used for all `batch` samples."""
        if self.kept.shape[0] == batch:
            return self
        grow = lambda t: None if t is None else t.expand(batch, -1)  # noqa: E731
        return TokenMatch(
            self.n,
            self.dst,
            self.src,
            grow(self.merged),
            grow(self.into),
            grow(self.kept),
            grow(self.order),
            grow(self.choice),
        )

    def recut(self, r: int) -> "TokenMatch":
        """The same matching with the `r` best-matched sources merged (a schedule changing the ratio between
        steps reuses the similarities instead of computing them again)."""
        if r == self.r:
            return self
        if self.order is None:
            raise ValueError("this match keeps no order to recut")
        return _cut(self.n, self.dst, self.src, self.order, self.choice, r)

    def sizes(self) -> torch.Tensor:
        """(B, N - r) float: how many original tokens each reduced token stands for."""
        batch = self.kept.shape[0]
        dst_sizes = torch.ones(batch, self.dst.numel(), device=self.merged.device)
        dst_sizes.scatter_add_(1, self.into, torch.ones_like(self.into, dtype=dst_sizes.dtype))
        return torch.cat([torch.ones(batch, self.kept.shape[1], device=self.merged.device), dst_sizes], 1)


def cell_of(grid: tuple[int, int, int], cell: tuple[int, int, int]) -> torch.Tensor:
    """(N,) long: the index of the `cell` each token of the frame-major sequence of `grid` falls in."""
    f, h, w = grid
    ct, ch, cw = cell
    cells_h, cells_w = -(-h // ch), -(-w // cw)
    t, y, x = torch.meshgrid(torch.arange(f) // ct, torch.arange(h) // ch, torch.arange(w) // cw, indexing="ij")
    return ((t * cells_h + y) * cells_w + x).flatten()


def own_destinations(cells: torch.Tensor, dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(Ns,) long: for each source, the position in `dst` of the destination of its own cell."""
    slot = torch.full((int(cells.max()) + 1,), -1, dtype=torch.long, device=cells.device)
    slot[cells[dst]] = torch.arange(dst.numel(), device=cells.device)
    own = slot[cells[src]]
    if (own < 0).any():
        raise ValueError("local matching needs one destination in every source's cell")
    return own


def cell_similarity(x: torch.Tensor, grid: tuple[int, int, int], cell: tuple[int, int, int], seed: int = 0) -> float:
    """Mean cosine similarity of the video tokens x (B, N, C) to their own cell's destination: how redundant
    the tokens are, the measurement behind calibrated reduction schedules."""
    dst, src = cell_partition(grid, cell, torch.Generator().manual_seed(seed))
    own = own_destinations(cell_of(grid, cell), dst, src).to(x.device)
    dst, src = dst.to(x.device), src.to(x.device)
    a, b = F.normalize(x[:, src].float(), dim=-1), F.normalize(x[:, dst[own]].float(), dim=-1)
    return float((a * b).sum(-1).mean())


def match(
    metric: torch.Tensor,
    dst: torch.Tensor,
    src: torch.Tensor,
    r: int,
    distance: str = "cosine",
    cells: torch.Tensor | None = None,
) -> TokenMatch:
    """Match every source to its most similar destination by `metric` (B, N, C) and merge the `r` best-matched
    sources. distance: "cosine" (ToMe) or "euclidean" (AsymRnR). `cells` (N,): each token's cell; given,
    a source may only match the destination of its own cell (local merging: a merged token's output is then
    always its neighbour's)."""
    batch, n = metric.shape[:2]
    r = max(0, min(int(r), src.numel()))
    device = metric.device
    dst, src = dst.to(device), src.to(device)
    a, b = metric[:, src].float(), metric[:, dst].float()
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', not {distance!r}")
    if cells is not None:
        # local: each source is compared with its own cell's destination only, O(N C) instead of O(N^2 C)
        own = own_destinations(cells.to(device), dst, src)
        b_own = b[:, own]
        if distance == "cosine":
            best = (F.normalize(a, dim=-1) * F.normalize(b_own, dim=-1)).sum(-1)
        else:
            best = -(a - b_own).norm(dim=-1)
        best_dst = own[None].expand(batch, -1)
    else:
        if distance == "cosine":
            score = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
        else:
            score = -torch.cdist(a, b)
        best, best_dst = score.max(-1)  # (B, Ns)
    return _cut(n, dst, src, best.argsort(-1, descending=True), best_dst, r)


def _cut(n, dst, src, order, choice, r) -> TokenMatch:
    r = max(0, min(int(r), src.numel()))
    merged = order[:, :r]
    kept = order[:, r:].sort(-1).values
    return TokenMatch(
        n=n, dst=dst, src=src, merged=merged, into=choice.gather(1, merged), kept=kept, order=order, choice=choice
    )


def merge(x: torch.Tensor, m: TokenMatch, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, C) -> (B, N - r, C): kept sources, then destinations averaged with the sources merged into them
    (weighted by `sizes` (B, N), the tokens each already stands for; default 1)."""
    batch, _, channels = x.shape
    xs, xd = x[:, m.src], x[:, m.dst]
    if sizes is None:
        sizes = torch.ones(batch, m.n, device=x.device, dtype=x.dtype)
    ws, wd = sizes[:, m.src].to(x.dtype), sizes[:, m.dst].to(x.dtype)
    into = m.into[..., None].expand(-1, -1, channels)
    w_merged = ws.gather(1, m.merged)
    # the weighted mean as the destination plus the weighted mean offset of what joins it: exact (not just
    # close) when the merged tokens equal their destination
    offset = (xs.gather(1, m.merged[..., None].expand(-1, -1, channels)) - xd.gather(1, into)) * w_merged[..., None]
    weight = wd.scatter_add(1, m.into, w_merged)
    merged = xd + torch.zeros_like(xd).scatter_add(1, into, offset) / weight[..., None]
    kept = xs.gather(1, m.kept[..., None].expand(-1, -1, channels))
    return torch.cat([kept, merged], 1)


def unmerge(y: torch.Tensor, m: TokenMatch) -> torch.Tensor:
    """(B, N - r, C) -> (B, N, C): kept sources and destinations back in place, every merged source given its
    destination's value."""
    batch, _, channels = y.shape
    n_kept = m.kept.shape[1]
    kept, yd = y[:, :n_kept], y[:, n_kept:]
    out = y.new_empty(batch, m.n, channels)
    out[:, m.dst] = yd
    src = yd.new_empty(batch, m.src.numel(), channels)
    src.scatter_(1, m.kept[..., None].expand(-1, -1, channels), kept)
    src.scatter_(
        1, m.merged[..., None].expand(-1, -1, channels), yd.gather(1, m.into[..., None].expand(-1, -1, channels))
    )
    out[:, m.src] = src
    return out
