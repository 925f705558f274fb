"""One generation: run a prepared request through the pipeline, timing denoising and decoding.

`generate` accepts a prompt (with request options as keyword arguments), a `GenerationRequest`,
or a `PreparedRequest` from `genaccel.generation.prepare`; the first two are prepared here. Timing excludes
model loading; per-run figures come from the pipeline's `Acceleration` (transformer passes
computed and skipped, attention calls reused).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from genaccel.decoding.light import light_decoder_for
from genaccel.engine.acceleration import Acceleration, acceleration_of
from genaccel.engine.distributed import enable_context_parallel
from genaccel.generation.prepare import PreparedRequest, install_prepared, prepare
from genaccel.generation.preview import Preview, Previewer
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
            **(
                {"previews": self.stats["previews"], "preview_seconds": round(self.stats["preview_seconds"], 4)}
                if "previews" in self.stats
                else {}
            ),
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


def _previewer(pipe, prepared: PreparedRequest, preview, every: int) -> Previewer:
    """What makes previews for this request: its light decoder, else the model's shipped one."""
    from genaccel.errors import InputError

    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"--preview-every must be a whole number of steps, at least 1; got {every!r}")
    light = prepared.light or light_decoder_for(pipe, prepared.family, prepared.request.decoder, for_preview=True)
    if light is None:
        raise InputError(
            "previews need a light decoder: this model ships none; give TAEHV weights with --decoder light:PATH"
        )
    return Previewer(light, preview, every)


def generate(
    pipe,
    request: PreparedRequest | GenerationRequest | str,
    *,
    progress: bool = False,
    callback=None,
    facts=None,
    preview: Callable[[Preview], None] | None = None,
    preview_every: int = 5,
    **options,
) -> GenerationResult:
    """Run one generation on `pipe`, accelerated as the request's `accel` says (or as `genaccel.apply`
    left it when `accel` is None).

    `request` may be a prompt string with request options as keyword arguments (field names or
    aliases: `seed=1, steps=20`). `callback(step, total)` is called after every denoising step when
    the pipeline supports step callbacks. `facts`: the model's `ModelFacts`, when the caller read them once
    for many generations (else a request is prepared with facts read from the pipeline). `preview(Preview)` is
    called every `preview_every` steps with the current estimate of the video, decoded by the light decoder
    (the request's, else the model's; InputError where there is none).
    """
    if isinstance(request, str):
        request = request_from_options({"prompt": request, **options})
    elif options:
        raise TypeError("request options as keyword arguments go with a prompt string")
    prepared = request if isinstance(request, PreparedRequest) else prepare(pipe, request, facts)
    previewer = _previewer(pipe, prepared, preview, preview_every) if preview is not None else None
    acceleration = _acceleration(pipe, prepared)
    call = dict(prepared.call, generator=torch.Generator("cpu").manual_seed(prepared.request.seed))
    if prepared.light is not None:  # the pipeline stops at the latents; the light decoder makes the frames
        call["output_type"] = "latent"
    if callback is not None:

        def on_step_end(p, i, t, kwargs):
            callback(i + 1, getattr(p, "_num_timesteps", None))
            return kwargs

        call["callback_on_step_end"] = on_step_end
    pipe.set_progress_bar_config(disable=not progress)
    timings = {"decode": 0.0}
    runtime = acceleration.runtime
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(_timed_decode(pipe, timings))
        stack.enter_context(acceleration.generation(prepared.request.setting))
        if previewer is not None:
            stack.enter_context(previewer.wrap(pipe))
        start = time.perf_counter()
        output = pipe(**call)
        if prepared.light is not None:
            decode_start = time.perf_counter()
            frames = prepared.light.decode(output.frames if hasattr(output, "frames") else output[0])
            timings["decode"] += time.perf_counter() - decode_start
        else:
            frames = _frames(output)
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
    stats = acceleration.stats()
    if previewer is not None:
        stats.update(previews=previewer.count, preview_seconds=previewer.seconds)
    return GenerationResult(
        frames=frames,
        request=ran,
        seconds=seconds,
        denoise_seconds=denoise,
        decode_seconds=timings["decode"],
        stats=stats,
        estimated_peak_bytes=prepared.memory.peak if prepared.memory else None,
    )
