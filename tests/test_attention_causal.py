"""Block-causal attention (genaccel/attention/causal.py): a chunk attends itself and earlier chunks only,
text attends everything, and through the seam a Wan transformer's output for early frames no longer
depends on later frames."""

import torch
import torch.nn.functional as F

from genaccel.attention import AttentionContext, install_seam, remove_seam
from genaccel.attention.causal import BlockCausalKernel, block_causal_mask
from genaccel.pipelines.families import family_of


def _context(grid, text=0, **kw):
    n = grid[0] * grid[1] * grid[2]
    return AttentionContext(video=(text, text + n), grid=grid, axes=("f", "h", "w"), layer=0, name="attn", **kw)


def test_mask_is_causal_across_chunks_and_full_inside_and_for_text():
    grid = (4, 1, 2)  # 8 video tokens, two per frame; chunks of 2 frames = 4 tokens
    mask = block_causal_mask(_context(grid, text=3), 11, chunk_frames=2)
    video = mask[3:, 3:]
    assert video[:4, :4].all() and not video[:4, 4:].any()  # chunk 0: itself only
    assert video[4:].all()  # chunk 1: itself and chunk 0
    assert mask[:3].all() and mask[:, :3].all()  # text rows and columns are full
    no_grid = AttentionContext(video=(0, 8), grid=None, axes=("f", "h", "w"), layer=0, name="attn")
    assert block_causal_mask(no_grid, 8, 2) is None  # nothing known about frames: nothing to enforce


def test_kernel_outputs_of_a_chunk_ignore_later_chunks():
    grid = (4, 2, 2)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8, generator=g) for _ in range(3))
    kernel = BlockCausalKernel(chunk_frames=2)
    out = kernel(q, k, v, _context(grid))
    first = slice(0, 8)  # chunk 0: frames 0-1
    torch.testing.assert_close(
        out[:, :, first], F.scaled_dot_product_attention(q[:, :, first], k[:, :, first], v[:, :, first])
    )
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 8:] += 5
    v2[:, :, 8:] -= 3
    changed = kernel(q, k2, v2, _context(grid))
    assert torch.equal(changed[:, :, first], out[:, :, first]) and not torch.allclose(changed[:, :, 8:], out[:, :, 8:])


def test_a_wan_transformer_through_the_seam_becomes_causal_in_frames(tiny):
    pipe = tiny("wan")
    transformer, family = pipe.transformer, family_of(pipe)
    registered = install_seam(transformer, family, BlockCausalKernel(chunk_frames=1))
    try:
        g = torch.Generator().manual_seed(0)
        channels = transformer.config.in_channels
        latents = torch.randn(1, channels, 3, 4, 4, generator=g)
        text = torch.randn(1, 5, transformer.config.text_dim, generator=g)
        step = torch.tensor([500])
        with torch.no_grad():
            out = transformer(latents, step, text, return_dict=False)[0]
            later = latents.clone()
            later[:, :, 2] += 1.0  # change the last latent frame only
            out2 = transformer(later, step, text, return_dict=False)[0]
        torch.testing.assert_close(out2[:, :, :2], out[:, :, :2], atol=1e-5, rtol=1e-5)  # earlier frames unchanged
        assert not torch.allclose(out2[:, :, 2], out[:, :, 2])
    finally:
        remove_seam(registered)
