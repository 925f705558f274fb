"""The compatibility matrix: every accelerator on every family's tiny pipeline.

For each pair: a config that skips nothing reproduces the baseline exactly; an aggressive config
runs, keeps the output's shape, stays finite and really saves work; after remove() the pipeline
gives the baseline again. Unsupported pairs are refused with a SpecError and leave the pipeline
untouched.
"""

import numpy as np
import pytest

from genaccel.acceleration import apply, remove
from genaccel.accelerators import ACCELERATORS, unsupported_reason
from genaccel.calibrate import calibrate
from genaccel.errors import SpecError
from genaccel.generate import generate
from genaccel.pipelines.families import family_of
from genaccel.pipelines.tiny import TINY_FAMILIES

PROMPT = "a red circle moving left on a black background"
NOOP = {
    "teacache": "teacache(threshold=0)",
    "fbcache": "fbcache(threshold=0)",
    "magcache": "magcache(threshold=0)",
    "pab": "pab(spatial=1,temporal=1,cross=1)",
    "fastercache": "fastercache(spatial=1,cfg=1)",
    "taylorseer": "taylorseer(interval=1)",
    "cfgcache": "cfgcache(interval=1)",
}
ACTIVE = {
    "teacache": "teacache(threshold=1e9,coefficients=identity)",
    "fbcache": "fbcache(threshold=10)",
    "magcache": "magcache(threshold=10,max_skip=3,retention=0)",
    "pab": "pab(spatial=2,temporal=2,cross=2,window=0:1000)",
    "fastercache": "fastercache(spatial=2,window=-1:1000,cfg=2,cfg_window=-1:1000)",
    "taylorseer": "taylorseer(interval=3,warmup=2)",
    "cfgcache": "cfgcache(interval=3,warmup=1)",
}
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

    from genaccel.prepare import model_defaults

    d = model_defaults(pipe)
    family = family_of(pipe)
    return {
        "prompt": PROMPT, "negative_prompt": "", "height": d["height"], "width": d["width"],
        family.frames_arg: d["num_frames"], "num_inference_steps": d["num_inference_steps"],
        "guidance_scale": d["guidance_scale"], "generator": torch.Generator("cpu").manual_seed(0),
        "output_type": "np", **d["extra"], **family.call_extra,
    }


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

    apply(pipe, ACTIVE[accel], profile=profile)
    fast = _run(pipe)
    assert fast.frames.shape == base.shape and np.isfinite(fast.frames).all()
    saved = fast.stats["skipped_calls"] + fast.stats["attention_reused"]
    assert saved > 0, f"{accel} saved nothing on {family}: {fast.stats}"
    if accel != "fastercache":  # its CFG cache changes the batch, not the pass/attention counters
        assert not np.array_equal(fast.frames, base)

    remove(pipe)
    np.testing.assert_array_equal(_run(pipe).frames, base, err_msg="remove() must restore the baseline")


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


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_none_equals_calling_diffusers_directly(tiny, family):
    base = _baseline(tiny, family)
    pipe = tiny(family)
    apply(pipe, "none")
    np.testing.assert_array_equal(pipe(**_plain_call(pipe)).frames[0], base)
    np.testing.assert_array_equal(_run(pipe).frames, base)
