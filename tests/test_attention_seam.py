"""The attention seam with the dense kernel: every family's self-attention goes through the kernel, with the
right grid and video token range, gives the family's own output, and is removed exactly."""

import numpy as np
import pytest
import torch

from genaccel.attention import LAYOUTS, SEAM_HOOK, dense_kernel, install_seam, layout_of, remove_seam, tokens_in
from genaccel.pipelines.families import FAMILIES
from genaccel.pipelines.tiny import TINY_FAMILIES, TINY_FAMILY, tiny_call_kwargs

# Read off the tiny configs (pipelines/tiny.py): 32x32 pixels, 8x spatial VAE; token grid after patching, and
# where the video tokens sit in a self-attention sequence (16 text tokens: CogVideoX puts them first).
EXPECTED = {
    "wan": {"grid": (3, 2, 2), "video": (0, 12)},  # 9 frames, 4x temporal, patch (1, 2, 2)
    "wan22": {"grid": (3, 2, 2), "video": (0, 12)},
    "cogvideox": {"grid": (3, 2, 2), "video": (16, 28)},  # text first, then 12 video tokens
    "hunyuanvideo": {"grid": (3, 2, 2), "video": (0, 12)},  # video then 16 text tokens
    "ltx": {"grid": (2, 4, 4), "video": (0, 32)},  # 9 frames, 8x temporal, patch 1
    "latte": {"grid": (4, 2, 2), "video": (0, 4)},  # spatial calls see 2x2 tokens, temporal calls 4 frames
    "mochi": {"grid": (2, 2, 2), "video": (0, 8)},  # 7 frames, 6x temporal; video then the valid text
}


def _family(name):
    return FAMILIES[TINY_FAMILY.get(name, name)]


def _frames(pipe, name, **overrides):
    overrides.setdefault("num_inference_steps", 4)  # fewer than the tiny default 8: exactness needs no more
    return pipe(**tiny_call_kwargs(name, **overrides)).frames


class Recorder:
    """A dense kernel that records what it saw."""

    def __init__(self, inner=dense_kernel):
        self.inner = inner
        self.seen = []

    def __call__(self, q, k, v, context):
        self.seen.append((tuple(q.shape), context))
        return self.inner(q, k, v, context)


def _install(pipe, name, kernel, runtime=None):
    """Register the seam on every denoiser; return [(module, hook name)] and the self-attention modules."""
    family = _family(name)
    registered = []
    for _, denoiser in family.denoiser_modules(pipe):
        registered += install_seam(denoiser, family, kernel, runtime)
    return registered, [module for module, hook_name in registered if hook_name == SEAM_HOOK]


def test_every_family_has_a_layout():
    assert set(LAYOUTS) == set(FAMILIES)


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_dense_seam_equals_family_attention(tiny, name):
    pipe = tiny(name)
    family = _family(name)
    layout = layout_of(family)
    baseline = _frames(pipe, name)

    originals = {
        id(m): m.processor for _, d in family.denoiser_modules(pipe) for _, m in family.attention_layers(d, "self")
    }
    kernel = Recorder()
    registered, modules = _install(pipe, name, kernel)
    assert len(modules) == len(originals) > 0
    batches = []  # batch size of every self-attention module call
    handles = [
        m.register_forward_pre_hook(
            lambda mod, args, kw: batches.append((args[0] if args else kw["hidden_states"]).shape[0]), with_kwargs=True
        )
        for m in modules
    ]
    try:
        out = _frames(pipe, name)
    finally:
        for h in handles:
            h.remove()
        remove_seam(registered)

    np.testing.assert_array_equal(out, baseline)  # exact: same prelude, same SDPA call
    expected_calls = sum(batches) if layout.per_sample else len(batches)
    assert len(batches) > 0 and len(kernel.seen) == expected_calls
    want = EXPECTED[name]
    axes_seen = set()
    for shape, context in kernel.seen:
        assert context.grid == want["grid"]
        assert context.video == want["video"]
        assert tokens_in(context.grid, context.axes) == context.video[1] - context.video[0]
        if layout.text == "none":
            assert shape[2] == context.video[1]
        axes_seen.add(context.axes)
    assert axes_seen == ({("h", "w"), ("f",)} if name == "latte" else {("f", "h", "w")})

    # Removed: every module has its own processor object back, and the output is unchanged.
    for m in modules:
        assert m.processor is originals[id(m)]
        assert m._diffusers_hook.get_hook(SEAM_HOOK) is None
    np.testing.assert_array_equal(_frames(pipe, name), baseline)


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_zero_kernel_changes_output(tiny, name):
    pipe = tiny(name)
    baseline = _frames(pipe, name, num_inference_steps=2)
    kernel = Recorder(lambda q, k, v, context: torch.zeros_like(q))
    registered, _ = _install(pipe, name, kernel)
    try:
        out = _frames(pipe, name, num_inference_steps=2)
    finally:
        remove_seam(registered)
    assert kernel.seen
    assert not np.allclose(out, baseline, atol=1e-4)


def test_context_follows_runtime_and_resets(tiny):
    """With genaccel's Runtime, the kernel sees each call's step and CFG branch; a generation start resets
    the seam's state (processor call counts, the kernel's own `reset`)."""
    import genaccel

    pipe = tiny("wan")
    acceleration = genaccel.apply(pipe, "none")
    resets = []
    kernel = Recorder()
    kernel.reset = lambda: resets.append(1)
    registered, modules = _install(pipe, "wan", kernel, runtime=acceleration.runtime)
    try:
        _frames(pipe, "wan", num_inference_steps=3)
        steps = {(c.branch, c.step) for _, c in kernel.seen}
        assert steps == {(b, s) for b in ("cond", "uncond") for s in range(3)}
        assert {c.layer for _, c in kernel.seen} == set(range(len(modules)))
        assert resets  # the generation start reset the seam's stateful hooks
        processor = modules[0].processor
        processor.calls = 5
        acceleration.reset()
        assert processor.calls == 0
    finally:
        remove_seam(registered)
        genaccel.remove(pipe)


def test_wan_fused_projections():
    """Wan's fused q/k/v projection (`fuse_qkv_projections`) goes through the seam unchanged."""
    from diffusers import WanTransformer3DModel

    from genaccel.pipelines.tiny import WAN_TRANSFORMER

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**WAN_TRANSFORMER).eval()
    x, text, t = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 32), torch.tensor([500.0])
    with torch.no_grad():
        transformer.fuse_qkv_projections()
        assert transformer.blocks[0].attn1.fused_projections
        reference = transformer(x, t, text).sample
        kernel = Recorder()
        install_seam(transformer, FAMILIES["wan"], kernel)
        out = transformer(x, t, text).sample
    assert torch.equal(out, reference)
    assert len(kernel.seen) == WAN_TRANSFORMER["num_layers"]
    assert all(c.grid == (3, 2, 2) for _, c in kernel.seen)


def test_cogvideox_rotary_reaches_the_seam():
    """CogVideoX 1.5/5b-style rotary tables (the tiny pipeline has none) pass through the legacy
    `Attention.forward`, which drops keyword arguments the processor does not name, to the video part."""
    from diffusers import CogVideoXTransformer3DModel

    from genaccel.pipelines.tiny import COGVIDEOX_TRANSFORMER

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(**COGVIDEOX_TRANSFORMER, use_rotary_positional_embeddings=True).eval()
    x, text, t = torch.randn(1, 3, 4, 4, 4), torch.randn(1, 16, 32), torch.tensor([500])
    head_dim = COGVIDEOX_TRANSFORMER["attention_head_dim"]
    rotary = (torch.randn(12, head_dim), torch.randn(12, head_dim))  # any tables: the test is equality
    with torch.no_grad():
        reference = transformer(x, text, t, image_rotary_emb=rotary).sample
        assert not torch.equal(reference, transformer(x, text, t).sample)  # the tables matter
        kernel = Recorder()
        install_seam(transformer, FAMILIES["cogvideox"], kernel)
        out = transformer(x, text, t, image_rotary_emb=rotary).sample
    assert torch.equal(out, reference)
    assert {c.video for _, c in kernel.seen} == {(16, 28)}
