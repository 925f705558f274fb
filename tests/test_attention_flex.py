"""The block-sparse FlexAttention engine (genaccel/attention/flex.py): a full table equals dense SDPA (padding,
text before, after or on both sides of the video), a sparse table, per head or shared, with or without a
token order and a key-padding mask, equals SDPA with the equivalent dense boolean mask (built here only, at
tiny size), on the eager and the compiled path; and through the seam the full table reproduces the plain
pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genaccel.attention import AttentionContext, BlockPlan, BlockSparseAttention, install_seam, remove_seam
from genaccel.attention.flex import _cpu_can_compile, compile_failure

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

GRID = (3, 4, 4)  # 48 video tokens, 16 per frame
BS = 16  # one frame per block here


def _context(video, grid=GRID, axes=("f", "h", "w"), attn_mask=None):
    return AttentionContext(video=video, grid=grid, axes=axes, layer=0, name="test", attn_mask=attn_mask)


def _qkv(length, heads=3, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, length, dim, generator=g) for _ in range(3)]


def _full(nv=3):
    return BlockPlan(torch.ones(1, nv, nv, dtype=torch.bool))


# (video range, sequence length): text before, text after, text on both sides; none a multiple of BS
CASES = {"text_before": ((5, 53), 53), "text_after": ((0, 48), 55), "text_both": ((3, 51), 58)}


def _compiled_engine():
    if not _cpu_can_compile():
        pytest.skip("compiled flex attention on CPU needs AVX2; this CPU lacks it")
    return BlockSparseAttention(block_size=BS, compile="auto")


def _check_compiled(engine):
    if compile_failure():
        pytest.skip(f"torch.compile of flex attention unavailable here: {compile_failure()}")
    assert engine.path() == "compiled"


@pytest.mark.parametrize("case", CASES)
def test_full_table_equals_sdpa_eager(case):
    video, length = CASES[case]
    q, k, v = _qkv(length)
    engine = BlockSparseAttention(block_size=BS, compile=False)
    with torch.no_grad():
        out = engine(q, k, v, _context(video), _full(), key="full")
        again = engine(q, k, v, _context(video), _full(), key="full")
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert torch.equal(out, again) and len(engine._masks) == 1  # mask cached per (key, shape)
    assert engine.path() == "eager" and engine.calls["eager"] == 2


def test_full_table_equals_sdpa_compiled():
    engine = _compiled_engine()
    video, length = CASES["text_before"]
    q, k, v = _qkv(length)
    with torch.no_grad():
        out = engine(q, k, v, _context(video), _full())
    _check_compiled(engine)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert not engine._masks  # no key: a dynamic plan is not cached


def _dense_mask(plan, video, length, heads, block_size=BS):
    """(H, S, S) boolean mask equal to a plan with dense text (test-only, tiny sizes)."""
    v0, v1 = video
    n = v1 - v0
    is_video = torch.zeros(length, dtype=torch.bool)
    is_video[v0:v1] = True
    order = plan.order.expand(heads, -1) if plan.order is not None else torch.arange(n)[None].expand(heads, -1)
    position = torch.empty_like(order).scatter_(1, order, torch.arange(n)[None].expand(heads, -1))
    block = torch.zeros(heads, length, dtype=torch.long)
    block[:, v0:v1] = position // block_size  # text tokens: any block, overridden below
    table = plan.table.expand(heads, -1, -1)
    inner = torch.stack([table[h][block[h][:, None], block[h][None, :]] for h in range(heads)])
    both_video = is_video[:, None] & is_video[None, :]
    return torch.where(both_video, inner, torch.ones_like(inner))


def _plans(heads=3, nv=3, n=48):
    g = torch.Generator().manual_seed(2)
    per_head = (torch.rand(heads, nv, nv, generator=g) < 0.5) | torch.eye(nv, dtype=torch.bool)
    shuffled = torch.stack([torch.randperm(n, generator=g) for _ in range(heads)])
    return {
        "shared": BlockPlan(torch.eye(nv, dtype=torch.bool)[None]),
        "per_head": BlockPlan(per_head),
        "per_head_order": BlockPlan(per_head, shuffled),
        "shared_order": BlockPlan(torch.eye(nv, dtype=torch.bool)[None], shuffled[:1]),
    }


@pytest.mark.parametrize("plan_name", list(_plans()))
@pytest.mark.parametrize("case", ["text_before", "text_both"])
def test_sparse_equals_sdpa_with_dense_mask_eager(case, plan_name):
    video, length = CASES[case]
    heads = 3
    q, k, v = _qkv(length, heads=heads, seed=1)
    plan = _plans()[plan_name]
    engine = BlockSparseAttention(block_size=BS, compile=False)
    with torch.no_grad():
        out = engine(q, k, v, _context(video), plan)
    mask = _dense_mask(plan, video, length, heads)
    assert not mask.all()  # genuinely sparse
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("plan_name", ["per_head", "per_head_order"])
def test_sparse_equals_sdpa_with_dense_mask_compiled(plan_name):
    engine = _compiled_engine()
    video, length = CASES["text_after"]
    q, k, v = _qkv(length, heads=3, seed=3)
    plan = _plans()[plan_name]
    with torch.no_grad():
        out = engine(q, k, v, _context(video), plan, key=plan_name)
    _check_compiled(engine)
    mask = _dense_mask(plan, video, length, 3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_key_padding_mask_joins_the_block_mask(compiled):
    """HunyuanVideo's (B, 1, 1, S) text-padding mask: padded keys stay hidden, per sample."""
    engine = _compiled_engine() if compiled else BlockSparseAttention(block_size=BS, compile=False)
    video, length = CASES["text_after"]  # 48 video tokens, then 7 text tokens
    q, k, v = _qkv(length, seed=4)
    keys = torch.ones(2, 1, 1, length, dtype=torch.bool)
    keys[0, ..., 50:] = False  # sample 0: five padded text tokens; sample 1: none
    plan = _plans()["per_head"]
    with torch.no_grad():
        out = engine(q, k, v, _context(video, attn_mask=keys), plan, key="padded")
    if compiled:
        _check_compiled(engine)
    mask = _dense_mask(plan, video, length, 3)[None] & keys
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)
    assert engine.calls["dense_masked"] == 0


def test_other_masks_run_dense():
    engine = BlockSparseAttention(block_size=BS, compile=False)
    video, length = CASES["text_after"]
    q, k, v = _qkv(length)
    additive = torch.zeros(2, 1, length, length)
    additive[..., -1] = float("-inf")
    with torch.no_grad():
        out = engine(q, k, v, _context(video, attn_mask=additive), _plans()["shared"])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=additive))
    assert engine.calls == {"compiled": 0, "eager": 0, "dense_masked": 1}


def test_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        BlockSparseAttention(block_size=24)


class _FullTable:
    """A dense seam kernel through the engine: every block kept."""

    def __init__(self):
        self.engine = BlockSparseAttention(compile=False)

    def __call__(self, q, k, v, context):
        nv = self.engine.num_blocks(context.video[1] - context.video[0])
        return self.engine(q, k, v, context, _full(nv), key="full")


def test_full_table_through_seam_equals_pipeline(tiny):
    """CogVideoX (text first, 16 text + 12 video tokens): the full table through the seam equals the plain
    pipeline."""
    from genaccel.pipelines.families import FAMILIES
    from genaccel.pipelines.tiny import TINY_FAMILY, tiny_call_kwargs

    name = "cogvideox"
    pipe = tiny(name)
    family = FAMILIES[TINY_FAMILY.get(name, name)]
    baseline = pipe(**tiny_call_kwargs(name, num_inference_steps=2)).frames
    kernel = _FullTable()
    registered = []
    for _, denoiser in family.denoiser_modules(pipe):
        registered += install_seam(denoiser, family, kernel)
    try:
        out = pipe(**tiny_call_kwargs(name, num_inference_steps=2)).frames
    finally:
        remove_seam(registered)
    np.testing.assert_allclose(out, baseline, atol=1e-5)
    assert kernel.engine.calls["eager"] > 0
