"""The compatibility matrix: every accelerator on every family's tiny pipeline.

For each pair: a config that skips nothing reproduces the baseline exactly; an aggressive config
runs, keeps the output's shape, stays finite and really saves work; after remove() the pipeline
gives the baseline again. Unsupported pairs are refused with a SpecError and leave the pipeline
untouched.
"""

import numpy as np
import pytest

from genaccel import apply, remove
from genaccel.accelerators import ACCELERATORS, unsupported_reason
from genaccel.errors import SpecError
from genaccel.generation.generate import generate
from genaccel.pipelines.families import family_of
from genaccel.pipelines.tiny import TINY_FAMILIES
from genaccel.tools.calibrate import calibrate

PROMPT = "a red circle moving left on a black background"
NOOP = {
    "teacache": "teacache(threshold=0)",
    "fbcache": "fbcache(threshold=0)",
    "magcache": "magcache(threshold=0)",
    "schedule": "schedule(steps=[" + ";".join(map(str, range(100))) + "])",  # every step computed
    "pab": "pab(spatial=1,temporal=1,cross=1)",
    "fastercache": "fastercache(spatial=1,cfg=1)",
    "taylorseer": "taylorseer(interval=1)",
    "cfgcache": "cfgcache(interval=1)",
    # sparse attention at density 1.0 keeps every block, from the first step and layer on
    "svg": "svg(density=1,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "radial": "radial(density=1,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "sta": "sta(density=1,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "topk": "topk(threshold=1,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "asymrnr": "asymrnr(q_ratio=0,kv_ratio=0,dense_steps=0,min_tokens=0)",
    "tome": "tome(ratio=0,ffn=true,dense_steps=0,min_tokens=0)",
    # a whole-clip generation commits nothing, so the cache stays empty
    "kvcache": "kvcache(window=2,sink=1)",
    "lightcache": "lightcache(offload=off,ffn_chunks=0)",
    # dynamo's tracing run eagerly computes what the model computes, op for op
    "compile": "compile(backend=eager)",
    "quant": "quant(modules=none)",
}
ACTIVE = {
    "teacache": "teacache(threshold=1e9,coefficients=identity)",
    "fbcache": "fbcache(threshold=10)",
    "magcache": "magcache(threshold=10,max_skip=3,retention=0)",
    "schedule": "schedule(steps=[0;3])",
    "pab": "pab(spatial=2,temporal=2,cross=2,window=0:1000)",
    "fastercache": "fastercache(spatial=2,window=-1:1000,cfg=2,cfg_window=-1:1000)",
    "taylorseer": "taylorseer(interval=3,warmup=2)",
    "cfgcache": "cfgcache(interval=3,warmup=1)",
    # tiny grids hold 8 to 32 video tokens: blocks of 2 tokens make a table worth sparsifying
    "svg": "svg(density=0.3,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "radial": "radial(density=0.3,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "sta": "sta(density=0.3,tile=1:1:2,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    "topk": "topk(threshold=0.5,dense_steps=0,dense_layers=0,max_density=1,block=2)",
    # tiny grids: cells of one frame x 1 x 2 tokens make every other token mergeable
    "asymrnr": "asymrnr(q_ratio=0.4,kv_ratio=0.4,cell=1:1:2,dense_steps=0,min_tokens=0)",
    "tome": "tome(ratio=0.4,ffn=true,cell=1:1:2,dense_steps=0,min_tokens=0)",
    "kvcache": "kvcache(window=2,sink=1)",  # active in a stream (see _stream_saves_work)
    # alone on CPU there is no cache state to move: the chunked feed-forward is what runs (see MEMORY)
    "lightcache": "lightcache(offload=on,ffn_chunks=2)",
    "compile": "compile(backend=aot_eager)",
    "quant": "quant(weights=int8,activations=int8)",
}
SPARSE = {"svg", "radial", "sta", "topk"}  # they save work by computing fewer attention blocks
TOKENS = {"asymrnr", "tome"}  # they save work by attending (and projecting) fewer tokens
# They save memory, not work: nothing is skipped and the output stays the baseline's up to float rounding;
# their own figures show that they acted (lightcache: feed-forward calls run in chunks).
MEMORY = {"lightcache"}
# They change how the same computation runs: nothing is skipped; their own figures show that they acted.
SYSTEMS = {"compile", "quant"}
STREAMED = {"kvcache"}  # works in streamed generation: chunks attend a bounded cache instead of the whole clip
assert set(NOOP) == set(ACTIVE) == set(ACCELERATORS)

_BASELINES, _PROFILES = {}, {}


def _run(pipe, prompt=PROMPT, seed=0):
    return generate(pipe, prompt, seed=seed)


def _baseline(tiny, family):
    if family not in _BASELINES:
        pipe = tiny(family)
        _BASELINES[family] = pipe(**_plain_call(pipe)).frames[0]
        _PROFILES[family] = calibrate(pipe, [PROMPT, "a blue square moving up on a gray background"])
    return _BASELINES[family]


def _plain_call(pipe):
    """The diffusers pipeline called directly, without genaccel, with the same settings."""
    import torch

    from genaccel.models.facts import model_defaults

    d = model_defaults(pipe)
    family = family_of(pipe)
    return {
        "prompt": PROMPT,
        "negative_prompt": "",
        "height": d["height"],
        "width": d["width"],
        family.frames_arg: d["num_frames"],
        "num_inference_steps": d["num_inference_steps"],
        "guidance_scale": d["guidance_scale"],
        "generator": torch.Generator("cpu").manual_seed(0),
        "output_type": "np",
        **d["extra"],
        **family.call_extra,
    }


def _kept_shares(figures) -> list[float]:
    """Shares of video tokens kept, from asymrnr's (per denoiser) or tome's (per site) figures."""
    shares = []
    for d in figures.get("denoisers", [figures]):
        shares += [d["q_kept"], d["kv_kept"]] if "q_kept" in d else list(d["kept"].values())
    return [s for s in shares if s is not None]


@pytest.mark.parametrize("accel", sorted(ACCELERATORS))
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_accelerator_on_family(tiny, family, accel):
    base = _baseline(tiny, family)
    pipe = tiny(family)
    adapter = family_of(pipe)
    profile = _PROFILES[family]
    if unsupported_reason(accel, adapter):
        with pytest.raises(SpecError, match="does not support"):
            apply(pipe, ACTIVE[accel], profile=profile)
        np.testing.assert_array_equal(_run(pipe).frames, base)
        return

    apply(pipe, NOOP[accel], profile=profile)
    noop = _run(pipe)
    np.testing.assert_array_equal(noop.frames, base, err_msg="a config that skips nothing must equal the baseline")
    assert noop.stats["skipped_calls"] == 0 and noop.stats["attention_reused"] == 0

    if accel in STREAMED:
        _stream_attends_cache(pipe, ACTIVE[accel])
        remove(pipe)
        np.testing.assert_array_equal(_run(pipe).frames, base, err_msg="remove() must restore the baseline")
        return

    apply(pipe, ACTIVE[accel], profile=profile)
    fast = _run(pipe)
    assert fast.frames.shape == base.shape and np.isfinite(fast.frames).all()
    if accel in SPARSE:
        figures = fast.stats["accelerators"][accel]
        densities = [d["sparse_density"] for d in figures.get("denoisers", [figures]) if d["sparse_density"]]
        assert densities and min(densities) < 1.0, f"{accel} computed every block on {family}: {figures}"
    elif accel in TOKENS:
        kept = _kept_shares(fast.stats["accelerators"][accel])
        assert kept and min(kept) < 1.0, f"{accel} reduced no token on {family}: {kept}"
    elif accel in SYSTEMS:
        figures = fast.stats["accelerators"][accel]
        assert figures.get("graphs_compiled", 0) > 0 or figures.get("linear_layers", 0) > 0, figures
        assert fast.stats["skipped_calls"] == 0
        if accel == "compile":  # the same computation, fused differently: float rounding
            np.testing.assert_allclose(fast.frames, base, atol=1e-4)
    elif accel in MEMORY:
        figures = fast.stats["accelerators"][accel]
        assert figures["ffn_chunked_calls"] > 0, f"{accel} chunked no feed-forward on {family}: {figures}"
        np.testing.assert_allclose(fast.frames, base, atol=1e-4)  # rounding, through 8 steps and the VAE
    else:
        saved = fast.stats["skipped_calls"] + fast.stats["attention_reused"]
        assert saved > 0, f"{accel} saved nothing on {family}: {fast.stats}"
    if (
        accel != "fastercache" and accel not in MEMORY and accel != "compile"
    ):  # fastercache's CFG cache changes the batch, not the counters
        assert not np.array_equal(fast.frames, base)

    remove(pipe)
    np.testing.assert_array_equal(_run(pipe).frames, base, err_msg="remove() must restore the baseline")


def _stream_attends_cache(pipe, spec):
    """A tiny stream of 5 chunks: later chunks attend the cache, which stays at sink + window frames."""
    from genaccel.generation.stream import stream

    pipe._genaccel_stream = {"chunk_frames": 1}
    chunks = list(stream(pipe, PROMPT, chunks=5, accel=spec, steps=2))
    assert all(np.isfinite(c.frames).all() for c in chunks)
    assert chunks[-1].cached_frames == [0, 3, 4]
    figures = chunks[-1] and pipe._genaccel.stats()["accelerators"]["kvcache"]
    figures = figures.get("denoisers", [figures])[0]
    assert figures["calls_with_cache"] > 0 and figures["cache_bytes"] > 0
    del pipe._genaccel_stream


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_stacked_pass_and_attention_caches(tiny, family):
    base = _baseline(tiny, family)
    pipe = tiny(family)
    apply(pipe, "teacache(threshold=0.5,coefficients=identity)+pab(spatial=2,temporal=2,cross=2,window=0:1000)")
    result = _run(pipe)
    assert result.frames.shape == base.shape and np.isfinite(result.frames).all()
    assert result.stats["skipped_calls"] > 0 and result.stats["attention_reused"] > 0
    remove(pipe)
    np.testing.assert_array_equal(_run(pipe).frames, base)


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "latte"])
def test_stacked_cache_and_sparse_attention(tiny, family):
    """A pass cache and a sparse attention kernel on one pipeline: both work, and removal is exact."""
    base = _baseline(tiny, family)
    pipe = tiny(family)
    apply(pipe, "teacache(threshold=0.5,coefficients=identity)+" + ACTIVE["sta"])
    result = _run(pipe)
    assert result.frames.shape == base.shape and np.isfinite(result.frames).all()
    figures = result.stats["accelerators"]["sta"]
    assert result.stats["skipped_calls"] > 0
    assert min(d["sparse_density"] or 1.0 for d in figures.get("denoisers", [figures])) < 1.0
    remove(pipe)
    np.testing.assert_array_equal(_run(pipe).frames, base)


@pytest.mark.parametrize("accel", sorted(TOKENS))
@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "latte"])
def test_stacked_cache_and_token_reduction(tiny, family, accel):
    """A pass cache and token reduction on one pipeline: both work, and removal is exact."""
    base = _baseline(tiny, family)
    pipe = tiny(family)
    apply(pipe, "teacache(threshold=0.5,coefficients=identity)+" + ACTIVE[accel])
    result = _run(pipe)
    assert result.frames.shape == base.shape and np.isfinite(result.frames).all()
    assert result.stats["skipped_calls"] > 0
    assert min(_kept_shares(result.stats["accelerators"][accel])) < 1.0
    remove(pipe)
    np.testing.assert_array_equal(_run(pipe).frames, base)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_none_equals_calling_diffusers_directly(tiny, family):
    base = _baseline(tiny, family)
    pipe = tiny(family)
    apply(pipe, "none")
    np.testing.assert_array_equal(pipe(**_plain_call(pipe)).frames[0], base)
    np.testing.assert_array_equal(_run(pipe).frames, base)
