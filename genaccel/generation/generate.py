"""One generation: run a prepared request through the pipeline, timing denoising and decoding.

`generate` accepts a prompt (with request options as keyword arguments), a `GenerationRequest`,
or a `PreparedRequest` from `genaccel.generation.prepare`; the first two are prepared here. Timing excludes
model loading; per-run figures come from the pipeline's `Acceleration` (transformer passes
computed and skipped, attention calls reused).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genaccel.engine.acceleration import Acceleration, acceleration_of
from genaccel.engine.distributed import enable_context_parallel
from genaccel.generation.prepare import PreparedRequest, install_prepared, prepare
from genaccel.generation.request import GenerationRequest, request_from_options
from genaccel.memory.offload import place, placement, unplaced


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1]
    request: GenerationRequest  # as run: model defaults filled, `accel` the canonical spec
    seconds: float  # whole pipeline call, model load excluded
    denoise_seconds: float
    decode_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    estimated_peak_bytes: int | None = None  # genaccel.memory.estimate's figure for this run, when it had one

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures of this run (no frames), in the request's vocabulary."""
        f, h, w = self.frames.shape[:3]
        return {
            **self.request.to_dict(),
            "num_frames": int(f),
            "height": int(h),
            "width": int(w),
            "seconds": round(self.seconds, 4),
            "denoise_seconds": round(self.denoise_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 4),
            "transformer_calls": self.stats.get("transformer_calls", 0),
            "skipped_calls": self.stats.get("skipped_calls", 0),
            "attention_calls": self.stats.get("attention_calls", 0),
            "attention_reused": self.stats.get("attention_reused", 0),
            "accelerator_stats": self.stats.get("accelerators", {}),
            "estimated_peak_bytes": self.estimated_peak_bytes,
        }


@contextmanager
def _timed_decode(pipe, timings: dict):
    """Time the VAE decode by wrapping this pipeline's vae.decode for the duration of one call."""
    vae = getattr(pipe, "vae", None)
    original = getattr(vae, "decode", None)
    if original is None:
        yield
        return

    def decode(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings["decode"] += time.perf_counter() - start

    vae.decode = decode
    try:
        yield
    finally:
        del vae.decode  # back to the class method


def _frames(output) -> np.ndarray:
    frames = output.frames if hasattr(output, "frames") else output[0]
    if isinstance(frames, torch.Tensor):  # (B, F, C, H, W)
        frames = frames[0].permute(0, 2, 3, 1).float().cpu().numpy()
    elif isinstance(frames, np.ndarray):
        frames = frames[0]
    else:  # list of lists of PIL images
        frames = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in frames[0]])
    return np.asarray(frames, dtype=np.float32)


def _acceleration(pipe, prepared: PreparedRequest) -> Acceleration:
    """The pipeline's acceleration for this request, the pipeline placed as it asks (offloading, VAE
    tiling); the acceleration is kept when it already runs the same spec."""
    current = acceleration_of(pipe)
    wanted = prepared.spec
    if wanted is None and current is not None and current.attention != prepared.request.attention:
        wanted = dataclasses.replace(current.resolved, attention=prepared.request.attention)  # same accelerators
    if current is None or (wanted is not None and current.resolved != wanted):
        current = install_prepared(pipe, dataclasses.replace(prepared, spec=wanted))
    degrees = getattr(pipe, "_genaccel_context_parallel", None)
    if degrees and not current.runtime.sharded:  # once: diffusers' split hooks must wrap the accelerators'
        with unplaced(pipe):  # and be wrapped by the offloading's, like genaccel's
            enable_context_parallel(pipe, current, degrees)
    place(pipe, prepared.request.offload, prepared.request.vae_tiling)
    return current


def generate(
    pipe,
    request: PreparedRequest | GenerationRequest | str,
    *,
    progress: bool = False,
    callback=None,
    facts=None,
    **options,
) -> GenerationResult:
    """Run one generation on `pipe`, accelerated as the request's `accel` says (or as `genaccel.apply`
    left it when `accel` is None).

    `request` may be a prompt string with request options as keyword arguments (field names or
    aliases: `seed=1, steps=20`). `callback(step, total)` is called after every denoising step when
    the pipeline supports step callbacks. `facts`: the model's `ModelFacts`, when the caller read them once
    for many generations (else a request is prepared with facts read from the pipeline).
    """
    if isinstance(request, str):
        request = request_from_options({"prompt": request, **options})
    elif options:
        raise TypeError("request options as keyword arguments go with a prompt string")
    prepared = request if isinstance(request, PreparedRequest) else prepare(pipe, request, facts)
    acceleration = _acceleration(pipe, prepared)
    call = dict(prepared.call, generator=torch.Generator("cpu").manual_seed(prepared.request.seed))
    if callback is not None:

        def on_step_end(p, i, t, kwargs):
            callback(i + 1, getattr(p, "_num_timesteps", None))
            return kwargs

        call["callback_on_step_end"] = on_step_end
    pipe.set_progress_bar_config(disable=not progress)
    timings = {"decode": 0.0}
    runtime = acceleration.runtime
    with torch.inference_mode(), _timed_decode(pipe, timings), acceleration.generation(prepared.request.setting):
        start = time.perf_counter()
        output = pipe(**call)
        seconds = time.perf_counter() - start
    denoise = max(0.0, runtime.last_call_end - runtime.first_call_start) if runtime.first_call_start else 0.0
    offload, vae_tiling = placement(pipe)
    ran = dataclasses.replace(
        prepared.request,
        num_inference_steps=prepared.request.num_inference_steps or runtime.num_steps,
        accel=acceleration.spec,
        offload=offload,
        vae_tiling=vae_tiling,
    )
    return GenerationResult(
        frames=_frames(output),
        request=ran,
        seconds=seconds,
        denoise_seconds=denoise,
        decode_seconds=timings["decode"],
        stats=acceleration.stats(),
        estimated_peak_bytes=prepared.memory.peak if prepared.memory else None,
    )
