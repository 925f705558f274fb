"""Block-sparse flex attention kernel (genaccel/attention/flex.py): density 1.0 equals dense SDPA (padding,
text before or after the video), a pattern's block table matches a hand-built one, a sparse table equals
SDPA with the equivalent dense boolean mask (built here only, at tiny size), and through the seam the full
table reproduces the plain pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry

from genaccel.attention import AttentionContext, seam_hooks
from genaccel.attention.flex import BlockSparseKernel, _cpu_can_compile, full_table, local_frames_table

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

GRID = (3, 4, 4)  # 48 video tokens, 16 per frame
BS = 16  # one frame per block here


def _context(video, grid=GRID, axes=("f", "h", "w")):
    return AttentionContext(video=video, grid=grid, axes=axes, layer=0, name="test")


def _qkv(length, heads=3, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, length, dim, generator=g) for _ in range(3)]


# (video range, sequence length): text before, text after, text on both sides; none a multiple of BS
CASES = {"text_before": ((5, 53), 53), "text_after": ((0, 48), 55), "text_both": ((3, 51), 58)}


@pytest.mark.parametrize("case", CASES)
def test_full_table_equals_sdpa_eager(case):
    video, length = CASES[case]
    q, k, v = _qkv(length)
    kernel = BlockSparseKernel(full_table, block_size=BS, compile=False)
    with torch.no_grad():
        out = kernel(q, k, v, _context(video))
        again = kernel(q, k, v, _context(video))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert torch.equal(out, again) and len(kernel._masks) == 1  # mask cached per (shape, table key)
    stats = kernel.stats()
    assert stats["path"] == "eager" and stats["calls"]["eager"] == 2 and stats["density"] == 1.0


def test_full_table_equals_sdpa_compiled():
    if not _cpu_can_compile():
        pytest.skip("compiled flex attention on CPU needs AVX2; this CPU lacks it")
    video, length = CASES["text_before"]
    q, k, v = _qkv(length)
    kernel = BlockSparseKernel(full_table, block_size=BS, compile="auto")
    with torch.no_grad():
        out = kernel(q, k, v, _context(video))
    if kernel.stats()["compile_failed"]:
        pytest.skip(f"torch.compile of flex attention unavailable here: {kernel.stats()['compile_failed']}")
    assert kernel.stats()["path"] == "compiled"
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_local_frames_table_matches_hand_built():
    one_frame_blocks = local_frames_table(1)
    one_frame_blocks.block_size = 16  # grid (3, 4, 4): block i is frame i
    expected = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert torch.equal(one_frame_blocks(3, _context((0, 48))), expected[None])

    same_frame = local_frames_table(0)
    same_frame.block_size = 8  # grid (3, 2, 2): block 0 = frames 0-1, block 1 = frame 2 + padding
    assert torch.equal(same_frame(2, _context((0, 12), grid=(3, 2, 2))), torch.eye(2, dtype=torch.bool)[None])
    same_frame.block_size = 2  # half frames: blocks 2f and 2f+1 are frame f
    expected = torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * 3)
    assert torch.equal(same_frame(6, _context((0, 12), grid=(3, 2, 2))), expected[None])
    # a spatial-only call (Latte's ("h", "w") sequences) is one frame: everything kept
    assert same_frame(2, _context((0, 4), grid=(3, 2, 2), axes=("h", "w"))).all()


def _dense_mask(table, video, length, heads):
    """(H, S, S) boolean mask equal to a video block table with dense text (test-only, tiny sizes)."""
    v0, v1 = video
    is_video = torch.zeros(length, dtype=torch.bool)
    is_video[v0:v1] = True
    block = ((torch.arange(length) - v0) // BS).clamp(0, table.shape[-1] - 1)  # text: any index, masked below
    table = table.expand(heads, -1, -1)
    inner = table[:, block[:, None], block[None, :]]
    both_video = is_video[:, None] & is_video[None, :]
    return torch.where(both_video, inner, torch.ones_like(inner))


@pytest.mark.parametrize("case", ["text_before", "text_after"])
def test_sparse_equals_sdpa_with_dense_mask(case):
    video, length = CASES[case]
    heads = 3
    q, k, v = _qkv(length, heads=heads, seed=1)
    g = torch.Generator().manual_seed(2)
    per_head = (torch.rand(heads, 3, 3, generator=g) < 0.5) | torch.eye(3, dtype=torch.bool)  # per-head table
    for table_fn, table in [(local_frames_table(0), torch.eye(3, dtype=torch.bool)[None]),
                            (lambda n, c: per_head, per_head)]:
        kernel = BlockSparseKernel(table_fn, block_size=BS, compile=False)
        with torch.no_grad():
            out = kernel(q, k, v, _context(video))
        mask = _dense_mask(table, video, length, heads)
        assert not mask.all()  # genuinely sparse
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)
        assert kernel.stats()["video_density"] == pytest.approx(table.float().mean().item())
        assert kernel.stats()["density"] < 1.0


def test_full_table_through_seam_equals_pipeline(tiny):
    """CogVideoX (text first, 16 text + 12 video tokens): the full table through the seam equals the plain
    pipeline."""
    from genaccel.pipelines.families import FAMILIES
    from genaccel.pipelines.tiny import TINY_FAMILY, tiny_call_kwargs

    name = "cogvideox"
    pipe = tiny(name)
    family = FAMILIES[TINY_FAMILY.get(name, name)]
    baseline = pipe(**tiny_call_kwargs(name, num_inference_steps=2)).frames
    kernel = BlockSparseKernel(full_table, compile=False)
    registered = []
    for _, denoiser in family.denoiser_modules(pipe):
        _, hooks = seam_hooks(denoiser, family, kernel)
        for module, hook_name, hook in hooks:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, hook_name)
            registered.append((module, hook_name))
    try:
        out = pipe(**tiny_call_kwargs(name, num_inference_steps=2)).frames
    finally:
        for module, hook_name in registered:
            module._diffusers_hook.remove_hook(hook_name, recurse=False)
    np.testing.assert_allclose(out, baseline, atol=1e-5)
    stats = kernel.stats()
    assert stats["calls"]["eager"] > 0 and stats["density"] == 1.0
