"""Calibration: fit a model's TeaCache rescale polynomial and MagCache ratios from a few prompts.

During plain (unaccelerated) generations a probe records, per step and CFG branch, the TeaCache
indicator of block 0 and the input/output of the cached run of blocks. Then:
- TeaCache: x = relative L1 change of the indicator between consecutive steps, y = relative L1
  change of the blocks' output; a 4th-order polynomial fitted y ~ poly(x) is the rescale.
- MagCache: ratio_t = mean|residual_t| / mean|residual_{t-1}| with residual = output - input,
  averaged over prompts and branches.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.acceleration import apply
from genaccel.accelerators.block_io import BlockIO
from genaccel.accelerators.teacache import relative_l1
from genaccel.generate import generate
from genaccel.request import GenerationRequest
from genaccel.profiles import pipeline_model_key, profile_dir, save_profile

PROBE_HOOK = "genaccel_calibration_probe"


@dataclass
class _Trace:
    indicators: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)


class _HeadProbe(ModelHook):
    def __init__(self, traces, runtime, family):
        super().__init__()
        self.traces, self.runtime, self.family = traces, runtime, family

    def initialize_hook(self, module):
        self.io = BlockIO(module)
        return module

    def pre_forward(self, module, *args, **kwargs):
        hidden, _ = self.io.inputs(args, kwargs)
        temb = self.io.arguments(args, kwargs)[self.family.temb_arg]
        indicator = self.family.teacache_indicator(module, hidden, temb)
        trace = self.traces[self.runtime.branch]
        trace.indicators.append(indicator.detach().float().clone())
        trace.inputs.append(hidden.detach().float().clone())
        return args, kwargs


class _TailProbe(ModelHook):
    def __init__(self, traces, runtime):
        super().__init__()
        self.traces, self.runtime = traces, runtime

    def initialize_hook(self, module):
        self.io = BlockIO(module)
        return module

    def post_forward(self, module, output):
        hidden, _ = self.io.outputs(output)
        self.traces[self.runtime.branch].outputs.append(hidden.detach().float().clone())
        return output


def _series(trace: _Trace):
    x, y, ratios = [], [], [1.0]
    for i in range(1, len(trace.outputs)):
        x.append(relative_l1(trace.indicators[i], trace.indicators[i - 1]))
        y.append(relative_l1(trace.outputs[i], trace.outputs[i - 1]))
        res, prev = trace.outputs[i] - trace.inputs[i], trace.outputs[i - 1] - trace.inputs[i - 1]
        ratios.append(float(res.abs().mean() / prev.abs().mean().clamp_min(1e-12)))
    return x, y, ratios


def calibrate(pipe, prompts: list[str], *, seeds=(0,), base: GenerationRequest | None = None, progress=None) -> dict:
    """Run plain generations with probes and return a profile dict (see module docstring).

    `base` holds the request fields every run shares (sizes, steps); prompt and seed vary."""
    acceleration = apply(pipe, "none", profile={})
    family, runtime = acceleration.family, acceleration.runtime
    xs, ys, ratio_runs = [], [], []
    traces: dict[str, _Trace] = defaultdict(_Trace)
    probes = []  # the blocks carrying a probe hook
    try:
        for _, denoiser in family.denoiser_modules(pipe):
            for block, hook in ((family.block_at(denoiser, family.pass_head), _HeadProbe(traces, runtime, family)),
                                (family.block_at(denoiser, family.pass_tail), _TailProbe(traces, runtime))):
                HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, PROBE_HOOK)
                probes.append(block)
        runs = [(p, s) for p in prompts for s in seeds]
        request = None
        for i, (prompt, seed) in enumerate(runs):
            traces.clear()
            result = generate(pipe, dataclasses.replace(base or GenerationRequest(), prompt=prompt, seed=seed, accel=None))
            request = result.request
            for trace in traces.values():
                x, y, ratios = _series(trace)
                xs += x
                ys += y
                ratio_runs.append(ratios)
            if progress:
                progress(i + 1, len(runs))
    finally:
        for block in probes:
            block._diffusers_hook.remove_hook(PROBE_HOOK, recurse=False)
        acceleration.remove()
    coefficients = np.polyfit(np.asarray(xs), np.asarray(ys), 4).tolist()
    length = min(len(r) for r in ratio_runs)
    ratios = np.mean([r[:length] for r in ratio_runs], axis=0).tolist()
    return {
        "model": pipeline_model_key(pipe),
        "family": family.name,
        "prompts": len(prompts),
        "num_inference_steps": request.num_inference_steps,
        "num_frames": request.num_frames or 0,
        "height": request.height or 0,
        "width": request.width or 0,
        "teacache": {"coefficients": [float(c) for c in coefficients], "samples": len(xs)},
        "magcache": {"ratios": [round(float(r), 6) for r in ratios]},
    }


def default_profile_path(pipe) -> Path:
    return profile_dir() / f"{pipeline_model_key(pipe)}.toml"


def write_profile(profile: dict, path: Path | None, pipe) -> Path:
    return save_profile(profile, Path(path) if path else default_profile_path(pipe))
