"""Calibration: fit a model's TeaCache rescale polynomial and MagCache ratios, and measure its token
redundancy, from a few prompts.

During plain (unaccelerated) generations a probe records, per step and CFG branch, the TeaCache
indicator of block 0 and the input/output of the cached run of blocks. Then:
- TeaCache: x = relative L1 change of the indicator between consecutive steps, y = relative L1
  change of the blocks' output; a 4th-order polynomial fitted y ~ poly(x) is the rescale.
- MagCache: ratio_t = mean|residual_t| / mean|residual_{t-1}| with residual = output - input,
  averaged over prompts and branches.
- Token redundancy: at every self-attention layer and step, the mean cosine similarity of the video tokens
  entering it to their (2, 2, 2) cell's destination; the table of means per layer and step drives the
  token accelerators' `schedule=profile` (genaccel/tokens/weights.py).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accelerators.block_io import BlockIO
from genaccel.accelerators.teacache import relative_l1
from genaccel.attention.layouts import LAYOUTS, tokens_in
from genaccel.attention.seam import GridHook, SeamState
from genaccel.engine.acceleration import NO_SPEC, install
from genaccel.generation.generate import generate
from genaccel.generation.request import GenerationRequest
from genaccel.models.profiles import pipeline_model_key, profile_dir, save_profile
from genaccel.tokens.matching import cell_similarity

PROBE_HOOK = "genaccel_calibration_probe"
TOKEN_PROBE_HOOK = "genaccel_calibration_tokens"
TOKEN_CELL = (2, 2, 2)  # the token accelerators' default cell


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


class _TokenProbe(ModelHook):
    """On a self-attention module: how alike its input video tokens are to their cell's destination, per step."""

    def __init__(self, similarity, state, layer: int, cell=TOKEN_CELL):
        super().__init__()
        self.similarity, self.state, self.layer, self.cell = similarity, state, layer, cell

    def initialize_hook(self, module):
        self.signature = inspect.signature(module.forward)
        return module

    def pre_forward(self, module, *args, **kwargs):
        x = self.signature.bind_partial(*args, **kwargs).arguments.get("hidden_states")
        grid = self.state.grid
        if grid is not None and isinstance(x, torch.Tensor) and x.dim() == 3:
            n = tokens_in(grid, ("f", "h", "w"))
            if x.shape[1] >= n > 1:
                v0, v1 = self.state.layout.video_range(x.shape[1], x.shape[1] - n)
                step = self.state.runtime.step_index
                self.similarity[(self.layer, step)].append(cell_similarity(x[:, v0:v1].detach(), grid, self.cell))
        return args, kwargs


def _token_probes(family, denoiser, runtime, similarity) -> list:
    """(module, hook) pairs measuring token redundancy at every self-attention layer (none if the family's
    attention is factorised or has no known layout)."""
    layout = LAYOUTS.get(family.name)
    if layout is None or layout.block_axes:
        return []
    state = SeamState(layout=layout, runtime=runtime)
    probes = [(denoiser, GridHook(state, family.tensor_format))]
    for index, (_, module) in enumerate(family.attention_layers(denoiser, "self")):
        probes.append((module, _TokenProbe(similarity, state, index)))
    return probes


def _similarity_table(similarity: dict) -> list[list[float]]:
    """{(layer, step): [values]} -> rows per layer, columns per step (means; a missing step repeats the last)."""
    layers = sorted({layer for layer, _ in similarity})
    steps = sorted({step for _, step in similarity})
    table = []
    for layer in layers:
        row, last = [], None
        for step in steps:
            values = similarity.get((layer, step))
            last = round(float(np.mean(values)), 4) if values else last
            row.append(last if last is not None else 0.0)
        table.append(row)
    return table


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
    acceleration = install(pipe, NO_SPEC, {})
    family, runtime = acceleration.family, acceleration.runtime
    xs, ys, ratio_runs = [], [], []
    traces: dict[str, _Trace] = defaultdict(_Trace)
    probes = []  # the modules carrying a probe hook
    similarity = defaultdict(list)  # (self-attention layer, step) -> token similarities
    try:
        for _, denoiser in family.denoiser_modules(pipe):
            hooks = [
                (family.block_at(denoiser, family.pass_head), _HeadProbe(traces, runtime, family)),
                (family.block_at(denoiser, family.pass_tail), _TailProbe(traces, runtime)),
            ]
            hooks += _token_probes(family, denoiser, runtime, similarity)
            for module, hook in hooks:
                name = TOKEN_PROBE_HOOK if isinstance(hook, (_TokenProbe, GridHook)) else PROBE_HOOK
                HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
                probes.append((module, name))
        runs = [(p, s) for p in prompts for s in seeds]
        request = None
        for i, (prompt, seed) in enumerate(runs):
            traces.clear()
            result = generate(
                pipe, dataclasses.replace(base or GenerationRequest(), prompt=prompt, seed=seed, accel=None)
            )
            request = result.request
            for trace in traces.values():
                x, y, ratios = _series(trace)
                xs += x
                ys += y
                ratio_runs.append(ratios)
            if progress:
                progress(i + 1, len(runs))
    finally:
        for module, name in probes:
            module._diffusers_hook.remove_hook(name, recurse=False)
        acceleration.remove()
    coefficients = np.polyfit(np.asarray(xs), np.asarray(ys), 4).tolist()
    length = min(len(r) for r in ratio_runs)
    ratios = np.mean([r[:length] for r in ratio_runs], axis=0).tolist()
    profile = {
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
    if similarity:
        profile["tokens"] = {"cell": list(TOKEN_CELL), "similarity": _similarity_table(similarity)}
    return profile


def default_profile_path(pipe) -> Path:
    return profile_dir() / f"{pipeline_model_key(pipe)}.toml"


def write_profile(profile: dict, path: Path | None, pipe) -> Path:
    return save_profile(profile, Path(path) if path else default_profile_path(pipe))
