"""Per-generation state: resets between prompts, per-CFG-branch state, first/last steps, both
Wan 2.2 experts, and the TeaCache and CFG-cache math."""

import numpy as np
import pytest

from genaccel import acceleration_of, apply
from genaccel.accelerators.base import PerBranchState
from genaccel.accelerators.cfgcache import should_compute_uncond
from genaccel.accelerators.teacache import relative_l1, rescale
from genaccel.generation.generate import generate

A = "a red circle moving left on a black background"
B = "a green square standing still on a gray background"


@pytest.mark.parametrize(
    "spec",
    [
        "teacache(threshold=0.5,coefficients=identity)",
        "pab(spatial=2,window=0:1000)",
        "fbcache(threshold=0.5)",
        "taylorseer(interval=3,warmup=2)",
        "cfgcache(interval=3,warmup=1)",
    ],
)
def test_no_state_leaks_between_prompts(tiny, spec):
    pipe = tiny("wan")
    apply(pipe, spec)
    first = generate(pipe, A, seed=1)
    generate(pipe, B, seed=2)
    again = generate(pipe, A, seed=1)
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.stats == again.stats


def test_state_resets_when_the_pipeline_is_called_directly(tiny):
    """Users may call pipe(...) themselves after apply(): a new generation still starts clean."""
    pipe = tiny("wan")
    acc = apply(pipe, "teacache(threshold=0.5,coefficients=identity)")
    call = dict(
        prompt=A,
        negative_prompt="",
        num_frames=9,
        height=32,
        width=32,
        num_inference_steps=8,
        guidance_scale=5.0,
        output_type="np",
        max_sequence_length=16,
    )
    import torch

    outs = []
    for prompt in (A, B, A):
        outs.append(pipe(**{**call, "prompt": prompt, "generator": torch.Generator().manual_seed(0)}).frames)
    np.testing.assert_array_equal(outs[0], outs[2])
    assert acc.runtime.generation == 3


def test_teacache_always_computes_first_and_last_step_of_each_branch(tiny):
    pipe = tiny("wan")  # separate cond/uncond forwards, 8 steps
    apply(pipe, "teacache(threshold=1e9,coefficients=identity)")
    result = generate(pipe, A)
    stats = result.stats
    assert stats["transformer_calls"] == 16
    assert stats["computed_calls"] == 4 and stats["skipped_calls"] == 12  # steps 0 and 7, per branch
    assert stats["accelerators"]["teacache"]["passes_computed"] == 4


def test_teacache_warmup_parameter(tiny):
    pipe = tiny("wan")
    apply(pipe, "teacache(threshold=1e9,coefficients=identity,warmup=3)")
    assert generate(pipe, A).stats["computed_calls"] == 2 * (3 + 1)


def test_pab_keeps_one_state_per_cfg_branch(tiny):
    pipe = tiny("wan")
    apply(pipe, "pab(spatial=2,window=0:1000)")
    states = [
        hook.state
        for m in pipe.transformer.modules()
        if hasattr(m, "_diffusers_hook")
        for hook in m._diffusers_hook.hooks.values()
        if isinstance(getattr(hook, "state", None), PerBranchState)
    ]
    assert len(states) == 6, "every PAB hook must use per-branch state"
    # Block 0's self-attention sees the same latents in both branches; cross-attention does not.
    states = [pipe.transformer.blocks[0].attn2._diffusers_hook.get_hook("pyramid_attention_broadcast").state]
    seen = {}  # the pipeline clears hook state when it finishes: look during the last step
    original = states[0]._factory

    def factory():
        state = original()
        seen[acceleration_of(pipe).runtime.branch] = state
        return state

    object.__setattr__(states[0], "_factory", factory)
    generate(pipe, A)
    assert set(seen) == {"cond", "uncond"}
    assert seen["cond"] is not seen["uncond"]
    assert not np.array_equal(np.asarray(seen["cond"].cache), np.asarray(seen["uncond"].cache))


def test_wan22_accelerates_both_experts(tiny):
    pipe = tiny("wan22")
    acc = apply(pipe, "teacache(threshold=1e9,coefficients=identity)")
    result = generate(pipe, A)
    assert len(acc._denoisers) == 2
    # Each expert computes its own first step; the low-noise expert also the last one.
    assert result.stats["computed_calls"] == 6 and result.stats["skipped_calls"] == 10


def test_reapply_replaces_and_remove_is_exact(tiny):
    pipe = tiny("cogvideox")

    def hooks():
        return {
            (n, h)
            for n, m in pipe.transformer.named_modules()
            if hasattr(m, "_diffusers_hook")
            for h in m._diffusers_hook.hooks
        }

    before = hooks()
    apply(pipe, "teacache+pab")
    apply(pipe, "fbcache+taylorseer")
    assert acceleration_of(pipe).spec == "fbcache+taylorseer"
    assert not any("teacache" in h or "pyramid" in h for _, h in hooks())
    acceleration_of(pipe).remove()
    assert hooks() == before and acceleration_of(pipe) is None


def test_teacache_math():
    assert rescale(0.5, (0.0, 0.0, 0.0, 1.0, 0.0)) == 0.5
    assert rescale(2.0, (1.0, 0.0, 0.0, 0.0, 1.0)) == 17.0
    import torch

    prev = torch.ones(4)
    assert relative_l1(prev * 1.5, prev) == pytest.approx(0.5)


def test_cfgcache_skips_unconditional_passes_on_its_schedule(tiny):
    pipe = tiny("wan")  # separate cond/uncond forwards, 8 steps
    apply(pipe, "cfgcache(interval=3,warmup=2)")
    stats = generate(pipe, A).stats
    compute = [should_compute_uncond(step, 8, interval=3, warmup=2) for step in range(8)]
    assert compute == [True, True, True, False, False, True, False, True]
    assert stats["transformer_calls"] == 16
    assert stats["skipped_calls"] == compute.count(False) == stats["accelerators"]["cfgcache"]["uncond_reused"]
    assert stats["accelerators"]["cfgcache"]["uncond_computed"] == compute.count(True)


def test_cfgcache_reused_uncond_is_cond_plus_last_difference(tiny):
    """On a reused step the unconditional output is this step's cond output plus the last measured
    (uncond - cond) difference; the conditional passes are untouched."""
    pipe = tiny("wan")
    apply(pipe, "cfgcache(interval=2,warmup=1)")
    outputs = []
    handle = pipe.transformer.register_forward_hook(lambda m, a, out: outputs.append(out[0].detach().clone()))
    try:
        generate(pipe, A)
    finally:
        handle.remove()
    cond, uncond = outputs[0::2], outputs[1::2]
    assert len(cond) == len(uncond) == 8
    last = None
    for step in range(8):
        if should_compute_uncond(step, 8, interval=2, warmup=1):
            last = step
        else:
            expected = cond[step] + (uncond[last] - cond[last])
            np.testing.assert_allclose(uncond[step].numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    assert not all(torch_equal(u, c) for u, c in zip(uncond, cond))


@pytest.mark.parametrize("pass_cache", ["fbcache(threshold=0.1)", "teacache(threshold=0.2,warmup=1)"])
def test_cfgcache_stacked_on_a_pass_cache_never_pairs_approximated_and_exact_branches(tiny, pass_cache):
    """Where the pass cache skipped the cond pass, the uncond output is cond + the difference measured
    at the last step where both passes computed; an uncond pass only computes next to a computed cond."""
    pipe = tiny("wan")
    acceleration = apply(pipe, f"{pass_cache}+cfgcache(interval=2,warmup=1)")
    calls = []  # (computed, output) per transformer call, cond and uncond alternating
    computed_before = []

    def before_call(module, args):
        computed_before.append(acceleration.counters.computed_passes())

    def after_call(module, args, output):
        calls.append((acceleration.counters.computed_passes() > computed_before.pop(), output[0].detach().clone()))

    pre = pipe.transformer.register_forward_pre_hook(before_call)
    post = pipe.transformer.register_forward_hook(after_call)
    try:
        generate(pipe, A)
    finally:
        pre.remove()
        post.remove()
    cond, uncond = calls[0::2], calls[1::2]
    assert len(cond) == len(uncond) == 8
    assert any(not computed for computed, _ in cond[1:]) and sum(c for c, _ in uncond) >= 2  # the test means something
    delta = None
    for (cond_computed, c), (uncond_computed, u) in zip(cond, uncond):
        if uncond_computed:
            assert cond_computed
            delta = u - c
        else:
            np.testing.assert_allclose(u.numpy(), (c + delta).numpy(), rtol=1e-6, atol=1e-6)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
