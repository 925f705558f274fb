"""Memory-lean caching: the cache-state walk (genaccel.accelerators.state), the measured `state_bytes` in the
stats when the state meter is on, and the LightCache accelerator (state swapped out between calls and back
before use, chunked feed-forward)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager
from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastState

from genaccel import apply
from genaccel.accelerators.base import HookLedger, PerBranchState
from genaccel.accelerators.lightcache import LightCache, SyncMover
from genaccel.accelerators.runtime import Runtime
from genaccel.accelerators.state import map_state, measured_state_bytes, move_state, state_tensors
from genaccel.engine.acceleration import METER_HOOK, install
from genaccel.errors import SpecError
from genaccel.generation.generate import generate
from genaccel.generation.spec import check_spec, resolve_spec
from genaccel.models.facts import ModelFacts

PROMPT = "a red circle moving left on a black background"
PAB = "pab(spatial=2,temporal=2,cross=2,window=0:1000)"
MAGCACHE_PROFILE = {"magcache": {"ratios": [1.0] * 8}}


def _by(acc, name):
    return next(a for a in acc.accelerators if a.name == name)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def _hooks(accelerator):
    return accelerator.ledger.hooks()


def _metered(pipe, spec, profile=None):
    """`apply(pipe, spec)` with the state meter on, as the bench installs."""
    facts = ModelFacts.of(pipe, None if profile is None else (profile,))
    return install(pipe, resolve_spec(spec, facts.family), facts.profile, meter_state=True)


# ------------------------------------------------------------------------ the walk, on a hand-built hook
class _Holder(ModelHook):
    def __init__(self, runtime):
        super().__init__()
        self.manager = StateManager(PyramidAttentionBroadcastState)
        self.per_branch = PerBranchState(PyramidAttentionBroadcastState, runtime)
        self.config_tensor_holder = object()  # not state: never entered
        self.module_ref = torch.nn.Linear(2, 2)  # not state either
        self.own: torch.Tensor | None = None
        self.pair: tuple | None = None
        self.nested: list | None = None


def _holder():
    runtime = Runtime()
    module = torch.nn.Identity()
    ledger = HookLedger()
    hook = _Holder(runtime)
    with ledger.recording(module):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, "holder")
    shared = torch.ones(4, 4)
    hook.own = torch.zeros(3)
    hook.pair = (shared, shared)
    hook.nested = [{"a": torch.ones(2, dtype=torch.float64)}, ("x", torch.ones(5))]
    for branch, value in (("cond", 1.0), ("uncond", 2.0)):
        state = PyramidAttentionBroadcastState()
        state.cache = torch.full((6,), value)
        hook.manager._state_cache[branch] = state
        runtime.branch = branch
        hook.per_branch.cache = torch.full((7,), value)

    return SimpleNamespace(ledger=ledger), hook, shared  # an accelerator, as the walk sees one


def test_walk_finds_every_kind_of_state_once():
    owner, hook, shared = _holder()
    found = state_tensors(owner)
    assert sum(t is shared for t in found) == 1  # held twice, found once
    assert {tuple(t.shape) for t in found} == {(3,), (4, 4), (2,), (5,), (6,), (7,)}
    assert len(found) == 1 + 1 + 2 + 2 + 2
    assert measured_state_bytes(owner) == 4 * 3 + 4 * 16 + 8 * 2 + 4 * 5 + 2 * 4 * 6 + 2 * 4 * 7
    assert not any(t is hook.module_ref.weight for t in found)
    only_cond = state_tensors(owner, branch="cond")  # per-branch state of cond, and state kept for all
    assert {tuple(t.shape) for t in only_cond} == {(3,), (4, 4), (2,), (5,), (6,), (7,)} and len(only_cond) == 6


def test_move_state_moves_in_place_keeps_sharing_and_counts_bytes():
    owner, hook, shared = _holder()
    total = measured_state_bytes(owner)
    assert move_state(owner, "meta") == total
    assert all(t.device.type == "meta" for t in state_tensors(owner))
    assert hook.pair[0] is hook.pair[1]  # still one tensor in two places
    assert hook.manager._state_cache["cond"].cache.device.type == "meta"
    assert object.__getattribute__(hook.per_branch, "_states")["uncond"].cache.device.type == "meta"
    assert move_state(owner, "meta") == 0  # nothing left to move
    calls = []
    map_state(owner, lambda t: calls.append(t) or t)
    assert len(calls) == 8


# ------------------------------------------------------------------------ on the tiny Wan pipeline
def test_walk_finds_teacache_state(tiny):
    pipe = tiny("wan")
    apply(pipe, "teacache(threshold=0)")
    head = pipe.transformer.blocks[0]._diffusers_hook.hooks["genaccel_teacache_head"]
    snap = {}

    def callback(step, total):  # compare the walk with the state objects themselves, mid-generation
        if step == 4:
            snap["walk"] = {id(t) for t in state_tensors(_by(pipe._genaccel, "teacache"))}
            snap["state"] = []
            for state in head.state._state_cache.values():
                snap["state"] += [state.previous_indicator, *[t for t in state.residual if t is not None]]

    generate(pipe, PROMPT, seed=0, callback=callback)
    assert len(snap["state"]) == 4  # cond and uncond: indicator and residual each
    assert snap["walk"] == {id(t) for t in snap["state"]}
    assert state_tensors(_by(pipe._genaccel, "teacache")) == []  # reset at the end of the call


def test_walk_finds_magcache_state(tiny):
    pipe = tiny("wan")
    apply(pipe, "magcache(threshold=0)", profile=MAGCACHE_PROFILE)
    snap = {}

    def callback(step, total):
        if step == 4:
            magcache = _by(pipe._genaccel, "magcache")
            snap["walk"] = {id(t) for t in state_tensors(magcache)}
            heads = [h for h in _hooks(magcache) if type(h).__name__ == "MagCacheHeadHook"]
            snap["residuals"] = [s.previous_residual for h in heads for s in h.state_manager._state_cache.values()]

    generate(pipe, PROMPT, seed=0, callback=callback)
    assert len(snap["residuals"]) == 2 and all(isinstance(t, torch.Tensor) for t in snap["residuals"])
    assert {id(t) for t in snap["residuals"]} <= snap["walk"]


def test_walk_finds_pab_state_per_branch(tiny):
    pipe = tiny("wan")
    apply(pipe, PAB)
    snap = {}

    def callback(step, total):
        if step == 4:
            pab = _by(pipe._genaccel, "pab")
            snap["walk"] = {id(t) for t in state_tensors(pab)}
            snap["caches"] = [
                s.cache
                for h in _hooks(pab)
                if isinstance(getattr(h, "state", None), PerBranchState)
                for s in object.__getattribute__(h.state, "_states").values()
                if s.cache is not None
            ]

    generate(pipe, PROMPT, seed=0, callback=callback)
    assert len(snap["caches"]) >= 2 * 6  # every attention layer of the 3 blocks, both branches
    assert snap["walk"] == {id(t) for t in snap["caches"]}


def test_state_meter_is_off_unless_asked(tiny):
    pipe = tiny("wan")
    acc = apply(pipe, "teacache(threshold=0)")
    assert not acc.meter_state
    assert pipe.transformer._diffusers_hook.get_hook(METER_HOOK) is None  # nothing walks the state after a call
    assert "state_bytes" not in generate(pipe, PROMPT, seed=0).stats["accelerators"]["teacache"]  # not 0: absent


def test_state_bytes_in_stats(tiny):
    pipe = tiny("wan")
    acc = _metered(pipe, "teacache(threshold=0)")
    snap = {}

    def callback(step, total):  # every pass is computed: the state has the same size after each call
        snap[step] = _nbytes(state_tensors(_by(acc, "teacache")))

    result = generate(pipe, PROMPT, seed=0, callback=callback)
    held = result.stats["accelerators"]["teacache"]["state_bytes"]
    # residual (1 x tokens x dim) and indicator, both branches
    hidden = 1 * 12 * pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim * 4
    assert held == snap[8] == max(snap.values()) == 2 * 2 * hidden
    acc.reset()
    assert acc.stats()["accelerators"]["teacache"]["state_bytes"] == 0  # per generation

    _metered(pipe, "magcache(threshold=0.5)", profile=MAGCACHE_PROFILE)
    assert generate(pipe, PROMPT, seed=0).stats["accelerators"]["magcache"]["state_bytes"] >= 2 * hidden
    _metered(
        pipe, "sta(density=0.5,dense_steps=0,dense_layers=0,max_density=1,block=2)+lightcache(offload=off,ffn_chunks=2)"
    )
    figures = generate(pipe, PROMPT, seed=0).stats["accelerators"]
    assert figures["sta"]["state_bytes"] == 0 and figures["lightcache"]["state_bytes"] == 0  # they keep nothing
    _metered(pipe, "none")
    assert generate(pipe, PROMPT, seed=0).stats["accelerators"] == {}


class _CountingMover(SyncMover):
    def __init__(self):
        super().__init__("cpu")
        self.stored = self.fetched = 0

    def store(self, tensor):
        self.stored += tensor.numel() * tensor.element_size()
        return super().store(tensor)

    def fetch(self, tensor, device):
        self.fetched += tensor.numel() * tensor.element_size()
        return super().fetch(tensor, device)


@pytest.mark.parametrize("order", ["first", "last"])
def test_offload_moves_state_out_after_each_call_and_back_before_use(tiny, order):
    pipe = tiny("wan")
    caches = "teacache(threshold=0.3,coefficients=identity)+" + PAB
    apply(pipe, caches)
    plain = generate(pipe, PROMPT, seed=0)
    assert plain.stats["skipped_calls"] > 0 and plain.stats["attention_reused"] > 0

    light_spec = "lightcache(offload=on)"
    acc = apply(pipe, f"{light_spec}+{caches}" if order == "first" else f"{caches}+{light_spec}")
    light, teacache, pab = _by(acc, "lightcache"), _by(acc, "teacache"), _by(acc, "pab")
    mover = light.mover = _CountingMover()  # CPU to CPU copies: the logic of the CUDA path, synchronously
    checks = {"after_call": 0, "before_use": 0}

    def stored_ids():
        return {id(t) for t in light.stored_tensors()}

    def callback(step, total):  # after both branches' calls of a step: all of their state is stored
        held = state_tensors(teacache) + state_tensors(pab)
        assert held and {id(t) for t in held} <= stored_ids()
        checks["after_call"] += 1

    decide = teacache.decide

    def checked_decide(state, indicator):  # TeaCache reads its state: it must be back
        branch_state = [state.previous_indicator, *(state.residual or ())]
        assert not {id(t) for t in branch_state if t is not None} & stored_ids()
        checks["before_use"] += 1
        return decide(state, indicator)

    teacache.decide = checked_decide

    def pab_reads(module, args):  # PAB reads its attention cache in the layer: this branch's is back
        for hook in _hooks(pab):
            states = object.__getattribute__(hook.state, "_states")
            state = states.get(acc.runtime.branch)
            if state is not None and state.cache is not None:
                assert id(state.cache) not in stored_ids()
                checks["before_use"] += 1

    handle = pipe.transformer.blocks[1].attn1.register_forward_pre_hook(pab_reads)
    try:
        swapped = generate(pipe, PROMPT, seed=0, callback=callback)
    finally:
        handle.remove()
    np.testing.assert_array_equal(swapped.frames, plain.frames)  # exact copies: bit-identical
    assert swapped.stats["skipped_calls"] == plain.stats["skipped_calls"]
    assert checks["after_call"] == 8 and checks["before_use"] > 16
    figures = swapped.stats["accelerators"]["lightcache"]
    assert figures["offloaded_bytes"] == mover.stored > 0
    assert figures["prefetched_bytes"] == mover.fetched > 0
    assert figures["prefetches"] == 2 * 8 - 2  # every call but each branch's first finds its state stored
    assert light.stored_tensors() == []  # the pipeline reset its hooks' state at the end: nothing kept


def test_offload_auto_on_cpu_moves_nothing(tiny):
    pipe = tiny("wan")
    apply(pipe, "teacache(threshold=0.3,coefficients=identity)")
    plain = generate(pipe, PROMPT, seed=0)
    apply(pipe, "teacache(threshold=0.3,coefficients=identity)+lightcache")  # auto: the state is in host memory
    result = generate(pipe, PROMPT, seed=0)
    np.testing.assert_array_equal(result.frames, plain.frames)
    figures = result.stats["accelerators"]["lightcache"]
    assert figures["offloaded_bytes"] == figures["prefetches"] == 0


def _denoiser_inputs(transformer):
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, config.in_channels, 3, 4, 4, generator=generator),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 8, config.text_dim, generator=generator),
        return_dict=False,
    )


def test_ffn_chunks_match_the_unchunked_feed_forward(tiny):
    pipe = tiny("wan")
    transformer = pipe.transformer
    inputs = _denoiser_inputs(transformer)
    with torch.no_grad():
        apply(pipe, "none")
        reference = transformer(**inputs)[0]
        acc = apply(pipe, "lightcache(offload=off,ffn_chunks=3)")
        chunked = transformer(**inputs)[0]
    light = _by(acc, "lightcache")
    blocks = len(transformer.blocks)
    assert light.ffn_modules == blocks
    assert light.ffn_chunked_calls == blocks  # every block's feed-forward ran in chunks, once
    assert acc.stats()["accelerators"]["lightcache"]["ffn_chunks"] == 3
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=0)


def test_ffn_chunks_sit_inside_token_merging(tiny):
    """Token merging on the feed-forward sees the whole sequence, wherever lightcache is in the spec."""
    pipe = tiny("wan")
    tome = "tome(ratio=0.4,ffn=true,cell=1:1:2,dense_steps=0,min_tokens=0)"
    apply(pipe, tome)
    merged = generate(pipe, PROMPT, seed=0)
    for spec in (f"{tome}+lightcache(offload=off,ffn_chunks=2)", f"lightcache(offload=off,ffn_chunks=2)+{tome}"):
        apply(pipe, spec)
        both = generate(pipe, PROMPT, seed=0)
        assert both.stats["accelerators"]["lightcache"]["ffn_chunked_calls"] > 0
        assert both.stats["accelerators"]["tome"]["kept"] == merged.stats["accelerators"]["tome"]["kept"]
        np.testing.assert_allclose(both.frames, merged.frames, atol=1e-4)


def test_lightcache_keeps_no_state_and_takes_no_slot():
    assert LightCache.slots == frozenset()
    assert LightCache.estimated_state_bytes(LightCache.config_class(), shape=None) == 0
    check_spec("teacache+pab+lightcache(offload=on,ffn_chunks=4)")  # stacks with anything


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lightcache(ffn_chunks=-1)", "ffn_chunks must be >= 0"),
        ("lightcache(offload=maybe)", "offload must be one of auto, on, off"),
        ("lightcache(ffn_chunks=1.5)", "expected int"),
    ],
)
def test_bad_parameters_are_refused_in_one_line(spec, message):
    with pytest.raises(SpecError, match=message) as info:
        check_spec(spec)
    assert "\n" not in str(info.value)
