"""Sparse attention patterns: the shared helpers (genaccel/attention/patterns.py) and each method's rule
(genaccel/accelerators/{radial,sta,svg,topk}.py): each method's block table and token order on a small grid
matches one built by hand from the method's definition; density fitting; SVG's profiling tells a temporal
head from a spatial one; top-k keeps the blocks that hold the mass."""

import pytest
import torch

from genaccel.accelerators.radial import Radial, radial_table
from genaccel.accelerators.sta import SlidingTile, sta_table, tile_order
from genaccel.accelerators.svg import SpatialTemporal, token_major_order
from genaccel.accelerators.topk import TopK
from genaccel.attention import AttentionContext, BlockPlan
from genaccel.attention.patterns import band_table, block_ranges, fit_density, token_coords


def _context(grid, video=None, axes=("f", "h", "w"), **kw):
    n = grid[0] * grid[1] * grid[2]
    return AttentionContext(
        video=video or (0, n),
        grid=grid,
        axes=axes,
        layer=kw.pop("layer", 3),
        name="blocks.3.attn1",
        step=kw.pop("step", 0),
        branch="cond",
        **kw,
    )


def test_token_coords_unravel_the_grid():
    coords = token_coords(_context((2, 2, 3)), 12)
    assert coords[7].tolist() == [1, 0, 1, 1]  # token 7 = frame 1, row 0, column 1, in-frame index 1
    assert coords[11].tolist() == [1, 1, 2, 5]
    spatial = token_coords(_context((2, 2, 3), axes=("h", "w")), 6)  # Latte-style one-frame call
    assert spatial[:, 0].eq(0).all() and spatial[5].tolist() == [0, 1, 2, 5]
    assert token_coords(_context((2, 2, 3)), 10).eq(0).all()  # grid does not fit the call: no structure


def test_radial_table_matches_hand_built():
    # grid (4, 2, 2), block 2: block b is frame b // 2, in-frame positions {0, 1} (b even) or {2, 3}
    coords = token_coords(_context((4, 2, 2)), 16)
    lo, hi = block_ranges(coords, None, 2)
    frame = torch.arange(8) // 2
    half = torch.arange(8) % 2
    distance = (frame[:, None] - frame[None, :]).abs()
    same_half = half[:, None] == half[None, :]
    sink = (frame == 0)[None, :].expand(8, -1)
    # scale 0.5 of a 4-token frame: distance 1 keeps positions 1 apart (width 1); distance 2-3 width 0.5
    expected = (distance == 0) | sink | (distance == 1) | same_half
    assert torch.equal(radial_table(lo, hi, 4, 0.5)[0], expected)
    # scale 0: only the same in-frame positions at any distance
    expected = (distance == 0) | sink | same_half
    assert torch.equal(radial_table(lo, hi, 4, 0.0)[0], expected)


def test_sliding_tile_order_and_table_match_hand_built():
    grid = (2, 4, 4)
    coords = token_coords(_context(grid), 32)
    order = tile_order(coords, (1, 2, 2), grid)
    assert order[0, :8].tolist() == [0, 1, 4, 5, 2, 3, 6, 7]  # tile (0, 0, 0), then tile (0, 0, 1)
    lo, hi = block_ranges(coords, order, 4)  # one tile per block: 8 tiles = (frame, tile row, tile column)
    tile = torch.arange(8)
    f, r, c = tile // 4, (tile // 2) % 2, tile % 2
    assert torch.equal(sta_table(lo, hi, (1, 2, 2), (0, 0, 0))[0], torch.eye(8, dtype=torch.bool))
    across_frames = (r[:, None] == r[None, :]) & (c[:, None] == c[None, :])
    assert torch.equal(sta_table(lo, hi, (1, 2, 2), (1, 0, 0))[0], across_frames)
    same_frame = f[:, None] == f[None, :]
    assert torch.equal(sta_table(lo, hi, (1, 2, 2), (0, 1, 1))[0], same_frame)


def test_token_major_order_groups_each_position_across_frames():
    coords = token_coords(_context((3, 1, 2)), 6)  # frame-major: f0p0 f0p1 f1p0 f1p1 f2p0 f2p1
    assert token_major_order(coords, 3)[0].tolist() == [0, 2, 4, 1, 3, 5]


def test_fit_density_takes_the_densest_table_at_or_below_the_target():
    width, table = fit_density(range(8), lambda w: band_table(8, w), 0.5)
    assert width == 1 and table.float().mean() <= 0.5  # width 1 keeps 22/64; width 2 would keep 34/64
    width, _ = fit_density(range(8), lambda w: band_table(8, w), 0.01)  # unreachable: the sparsest
    assert width == 0


@pytest.mark.parametrize("pattern", [Radial(0.6), SlidingTile(0.3, (1, 2, 2))])
def test_static_patterns_fit_their_density_and_cache_the_plan(pattern):
    context = _context((8, 4, 4))
    q = torch.zeros(1, 2, 128, 8)
    plan, key = pattern.plan(q, q, q, context, 4)
    again, same_key = pattern.plan(q, q, q, context, 4)
    assert again is plan and key == same_key
    assert 0.1 < plan.density <= pattern.density
    # a plan's figures are computed once (no per-call host-side tensor work for a cached plan)
    copy = BlockPlan(plan.table.clone())
    density, full = copy.density, copy.full
    copy.table.fill_(True)
    assert (copy.density, copy.full) == (density, full) == (plan.density, False)
    assert plan.table[0].diagonal().all()  # every block attends itself


def _structured_qkv(grid, temporal_heads, seed=0):
    """q = k per head: temporal heads match tokens at the same in-frame position, spatial heads tokens in the
    same frame (one-hot codes, scaled so the attention concentrates there)."""
    f, h, w = grid
    n = f * h * w
    coords = token_coords(_context(grid), n)
    heads = []
    g = torch.Generator().manual_seed(seed)
    for temporal in temporal_heads:
        code = coords[:, 3] if temporal else coords[:, 0]
        x = torch.nn.functional.one_hot(code, 16).float() * 6 + 0.1 * torch.randn(n, 16, generator=g)
        heads.append(x)
    q = torch.stack(heads)[None]
    v = torch.randn(1, len(temporal_heads), n, 16, generator=g)
    return q, q.clone(), v


def test_svg_profiling_classes_spatial_and_temporal_heads():
    grid = (8, 2, 4)  # 64 tokens, 8 per frame; block 8 = one frame in frame-major order
    heads = [True, False, True]
    q, k, v = _structured_qkv(grid, heads)
    pattern = SpatialTemporal(density=0.3, samples=32)
    plan, key = pattern.plan(q, k, v, _context(grid), 8)
    assert pattern.stats()["temporal_heads"] == pytest.approx(2 / 3, abs=1e-3)
    identity = torch.arange(64)
    assert torch.equal(plan.order[1], identity) and not torch.equal(plan.order[0], identity)
    assert torch.equal(plan.order[0], token_major_order(token_coords(_context(grid), 64), 8)[0])
    # the classification is kept until `refresh` steps later, and with it the very plan (whose figures and
    # device copies are computed once)
    plan2, _ = pattern.plan(q, k, v, _context(grid, step=3), 8)
    assert pattern.stats()["profiled"] == 1
    assert plan2 is plan and plan.order_on(torch.device("cpu")) is plan.order_on(torch.device("cpu"))
    pattern.plan(q, k, v, _context(grid, step=5), 8)
    assert pattern.stats()["profiled"] == 2
    pattern.reset()
    assert pattern.stats()["profiled"] == 2  # figures outlive the per-generation reset
    pattern.reset_stats()
    assert pattern.stats()["profiled"] == 0


def test_topk_keeps_the_blocks_holding_the_mass():
    # 4 blocks of 4 tokens; queries of block i match only keys of block (i + 1) % 4
    n, bs = 16, 4
    block = torch.arange(n) // bs
    q = torch.nn.functional.one_hot(block, 8).float()[None, None] * 8
    k = torch.nn.functional.one_hot((block - 1) % 4, 8).float()[None, None] * 8
    context = _context((1, 4, 4))
    plan, key = TopK(0.9).plan(q, k, k, context, bs)
    expected = torch.eye(4, dtype=torch.bool) | torch.eye(4, dtype=torch.bool).roll(1, 1)
    assert key is None and torch.equal(plan.table[0], expected)
    everything, _ = TopK(1.0).plan(q, k, k, context, bs)
    assert everything.table.all()
