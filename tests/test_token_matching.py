"""Token matching (genaccel/tokens/matching.py): r = 0 is the identity, merging then unmerging identical
tokens restores them exactly, kept tokens keep their positions, and a merge is a size-weighted mean."""

import torch

from genaccel.tokens import cell_of, cell_partition, match, merge, unmerge

GRID = (4, 4, 6)  # 96 tokens
CELL = (2, 2, 2)  # 2 x 2 x 3 = 12 cells: 12 destinations


def _x(seed=0, batch=2, channels=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 96, channels, generator=g)


def test_cell_partition_has_one_destination_per_cell():
    dst, src = cell_partition(GRID, CELL, torch.Generator().manual_seed(0))
    assert dst.numel() == 12 and src.numel() == 84
    assert torch.equal(torch.cat([dst, src]).sort().values, torch.arange(96))
    f, h, w = dst // 24, (dst // 6) % 4, dst % 6
    cells = (f // 2) * 6 + (h // 2) * 3 + w // 2
    assert torch.equal(cells.sort().values, torch.arange(12))
    dst, src = cell_partition((3, 3, 5), CELL)  # partial border cells still get one each
    assert dst.numel() == 2 * 2 * 3


def test_local_matching_merges_only_within_a_cell():
    dst, src = cell_partition(GRID, CELL, torch.Generator().manual_seed(0))
    cells = cell_of(GRID, CELL)
    assert cells.shape == (96,) and torch.equal(cells[dst].sort().values, torch.arange(12))
    x = torch.randn(2, 96, 8, generator=torch.Generator().manual_seed(1))
    m = match(x, dst, src, 40, cells=cells)
    assert torch.equal(cells[m.src[m.merged]], cells[m.dst[m.into]])  # every merge stays inside its cell
    assert not torch.equal(cells[src[match(x, dst, src, 40).merged]], cells[dst[match(x, dst, src, 40).into]])


def test_zero_ratio_is_the_identity():
    x = _x()
    dst, src = cell_partition(GRID, CELL)
    m = match(x, dst, src, 0)
    reduced = merge(x, m)
    assert reduced.shape == x.shape
    assert torch.equal(unmerge(reduced, m), x)
    assert torch.equal(reduced, x[:, m.positions()[0]])


def test_merging_identical_tokens_then_unmerging_restores_them():
    dst, src = cell_partition(GRID, CELL, torch.Generator().manual_seed(1))
    # every token a copy of its cell's destination: each source has an exact match
    index = torch.arange(96)
    f, h, w = index // 24, (index // 6) % 4, index % 6
    cell_of = (f // 2) * 6 + (h // 2) * 3 + w // 2
    values = torch.randn(2, 12, 8)
    dst_cell = cell_of[dst]
    x = values[:, cell_of]  # token t carries its cell's value
    m = match(x, dst, src, 60, distance="euclidean")
    reduced = merge(x, m)
    assert reduced.shape == (2, 36, 8)
    assert torch.equal(unmerge(reduced, m), x)
    assert torch.equal(values[:, dst_cell], reduced[:, -12:])


def test_kept_tokens_keep_their_positions_and_sizes_add_up():
    x = _x(2)
    dst, src = cell_partition(GRID, CELL)
    m = match(x, dst, src, 30)
    positions = m.positions()
    reduced = merge(x, m)
    kept = m.kept.shape[1]
    assert torch.equal(reduced[:, :kept], torch.stack([x[b, positions[b, :kept]] for b in range(2)]))
    assert torch.equal(positions[:, kept:], dst[None].expand(2, -1))
    assert torch.equal(m.sizes().sum(1), torch.full((2,), 96.0))


def test_merge_is_a_size_weighted_mean():
    x = torch.tensor([[[0.0], [1.0], [10.0], [3.0]]])  # destinations 0 and 2; sources 1 and 3
    dst, src = torch.tensor([0, 2]), torch.tensor([1, 3])
    m = match(x, dst, src, 2, distance="euclidean")  # 1 -> 0, 3 -> 0 (|3-0| < |3-10|)
    assert m.into.tolist() == [[0, 0]]
    assert torch.allclose(merge(x, m), torch.tensor([[[4.0 / 3], [10.0]]]))
    sizes = torch.tensor([[2.0, 1.0, 1.0, 1.0]])  # destination 0 already stands for two tokens
    assert torch.allclose(merge(x, m, sizes), torch.tensor([[[1.0], [10.0]]]))


def _cell_copies(grid, cell, batch=1, heads=2, dim=8, seed=0):
    """q, k, v (B, H, N, D) whose tokens are identical inside every cell."""
    f, h, w = grid
    index = torch.arange(f * h * w)
    tf, th, tw = index // (h * w), (index // w) % h, index % w
    cells = -(-h // cell[1]), -(-w // cell[2])
    cell_of = ((tf // cell[0]) * cells[0] + th // cell[1]) * cells[1] + tw // cell[2]
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, int(cell_of.max()) + 1, dim, generator=g)[:, :, cell_of] for _ in range(3)]


def test_reduction_of_cell_copies_equals_dense_attention():
    """Identical tokens: merged queries get their copies' outputs, merged keys weigh what their copies did."""
    import torch.nn.functional as F

    from genaccel.attention import AttentionContext
    from genaccel.tokens.reduce import AsymmetricReductionKernel

    grid, cell = (4, 4, 4), (2, 2, 2)
    q, k, v = _cell_copies(grid, cell)
    text = torch.randn(1, 2, 5, 8)  # five text tokens before the video, never reduced
    q, k, v = (torch.cat([text, x], 2) for x in (q, k, v))
    context = AttentionContext(video=(5, 69), grid=grid, axes=("f", "h", "w"), layer=0, name="attn", step=0)
    kernel = AsymmetricReductionKernel(q_ratio=0.5, kv_ratio=0.75)
    out = kernel(q, k, v, context)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    stats = kernel.stats()
    assert stats["q_kept"] == 0.5 and stats["kv_kept"] == 0.25 and stats["matched"] == 1
    kernel(q, k, v, context)  # same step: the match is reused
    assert kernel.stats()["reused"] == 1


def test_zero_ratios_leave_attention_untouched():
    from genaccel.attention import AttentionContext, dense_kernel
    from genaccel.tokens.reduce import AsymmetricReductionKernel

    q, k, v = (torch.randn(2, 2, 64, 8) for _ in range(3))
    context = AttentionContext(video=(0, 64), grid=(4, 4, 4), axes=("f", "h", "w"), layer=0, name="attn", step=0)
    out = AsymmetricReductionKernel(q_ratio=0.0, kv_ratio=0.0)(q, k, v, context)
    assert torch.equal(out, dense_kernel(q, k, v, context))
    # calls shorter than min_tokens run unreduced, whatever the ratios
    short = AsymmetricReductionKernel(q_ratio=0.5, kv_ratio=0.5, min_tokens=65)
    assert torch.equal(short(q, k, v, context), dense_kernel(q, k, v, context))
    assert short.stats()["q_kept"] == 1.0 and short.stats()["matched"] == 0
