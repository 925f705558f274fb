"""One generation: validate the request, run the pipeline, time denoising and decoding.

Settings left unset fall back to the model's defaults (the tiny pipelines' test sizes, or the
pipeline's own defaults for real checkpoints). Timing excludes model loading; per-run figures
come from the pipeline's `Acceleration` (transformer passes computed and skipped).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from genaccel.acceleration import acceleration_of, apply
from genaccel.errors import InputError
from genaccel.pipelines.families import family_of


@dataclass
class GenerationRequest:
    """What to generate. None means "the model's default"."""

    prompt: str
    negative_prompt: str = ""
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    setting: str = "default"  # a named group of defaults of the model (e.g. "long")


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1]
    request: GenerationRequest
    accel: str
    seconds: float  # whole pipeline call, model load excluded
    denoise_seconds: float
    decode_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures of this run (no frames)."""
        f, h, w = self.frames.shape[:3]
        out = {k: v for k, v in asdict(self.request).items() if k not in ("num_inference_steps", "num_frames")}
        out.update(
            accel=self.accel,
            steps=self.request.num_inference_steps,
            frames=int(f),
            height=int(h),
            width=int(w),
            seconds=round(self.seconds, 4),
            denoise_seconds=round(self.denoise_seconds, 4),
            decode_seconds=round(self.decode_seconds, 4),
            transformer_calls=self.stats.get("transformer_calls", 0),
            skipped_calls=self.stats.get("skipped_calls", 0),
            attention_calls=self.stats.get("attention_calls", 0),
            attention_reused=self.stats.get("attention_reused", 0),
            accelerator_stats=self.stats.get("accelerators", {}),
        )
        return out


def model_settings(pipe) -> list[str]:
    """Names of the settings a loaded model offers ("default" always)."""
    return ["default", *(getattr(pipe, "_genaccel_defaults", None) or {}).get("settings", {})]


def model_defaults(pipe, setting: str = "default") -> dict[str, Any]:
    """Call defaults of a loaded pipeline for a setting (the pipeline's own where genaccel has none)."""
    defaults = dict(getattr(pipe, "_genaccel_defaults", None) or {})
    settings = defaults.pop("settings", {})
    if setting != "default":
        if setting not in settings:
            raise InputError(f"this model has no '{setting}' setting (settings: {', '.join(model_settings(pipe))})")
        defaults.update(settings[setting])
    return defaults


def complete_request(pipe, request: GenerationRequest) -> GenerationRequest:
    """Fill unset fields from the model's defaults and validate everything; raise InputError."""
    family = family_of(pipe)
    defaults = model_defaults(pipe, request.setting)
    filled = GenerationRequest(**asdict(request))
    for name in ("num_frames", "height", "width", "num_inference_steps", "guidance_scale"):
        if getattr(filled, name) is None and name in defaults:
            setattr(filled, name, defaults[name])
    if not filled.prompt or not filled.prompt.strip():
        raise InputError("the prompt is empty")
    if filled.num_inference_steps is not None and filled.num_inference_steps <= 0:
        raise InputError(f"steps must be positive; got {filled.num_inference_steps}")
    if filled.guidance_scale is not None and filled.guidance_scale < 0:
        raise InputError(f"guidance must be >= 0; got {filled.guidance_scale}")
    if filled.seed < 0:
        raise InputError(f"seed must be >= 0; got {filled.seed}")
    if filled.num_frames is not None:
        family.check_frames(filled.num_frames, pipe)
    if filled.height is not None or filled.width is not None:
        family.check_size(filled.height or family.size_multiple, filled.width or family.size_multiple)
    return filled


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


def pipeline_call_kwargs(pipe, request: GenerationRequest) -> dict[str, Any]:
    """The keyword arguments `generate` passes to the diffusers pipeline for a completed request."""
    family = family_of(pipe)
    call = dict(model_defaults(pipe, request.setting).get("extra", {}))
    call.update(family.call_extra)
    call.update(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        output_type="np",
    )
    for name, value in (
        (family.frames_arg, request.num_frames),
        ("height", request.height),
        ("width", request.width),
        ("num_inference_steps", request.num_inference_steps),
        ("guidance_scale", request.guidance_scale),
    ):
        if value is not None:
            call[name] = value
    return call


def generate(pipe, request: GenerationRequest | str, *, progress: bool = False, callback=None, **kwargs) -> GenerationResult:
    """Run one generation on `pipe` (accelerated if `genaccel.apply` was called on it).

    `request` may be a prompt string, with other fields as keyword arguments. `callback(step,
    total)` is called after every denoising step when the pipeline supports step callbacks.
    """
    if isinstance(request, str):
        request = GenerationRequest(prompt=request, **kwargs)
    request = complete_request(pipe, request)
    acceleration = acceleration_of(pipe) or apply(pipe, "none")
    acceleration.reset()
    call = pipeline_call_kwargs(pipe, request)
    if callback is not None:
        call["callback_on_step_end"] = lambda p, i, t, kw: (callback(i + 1, p._num_timesteps if hasattr(p, "_num_timesteps") else None), kw)[1]
    pipe.set_progress_bar_config(disable=not progress)
    timings = {"decode": 0.0}
    runtime = acceleration.runtime
    with torch.inference_mode(), _timed_decode(pipe, timings):
        start = time.perf_counter()
        output = pipe(**call)
        seconds = time.perf_counter() - start
    denoise = max(0.0, runtime.last_call_end - runtime.first_call_start) if runtime.first_call_start else 0.0
    if request.num_inference_steps is None:
        request.num_inference_steps = runtime.num_steps
    return GenerationResult(
        frames=_frames(output),
        request=request,
        accel=acceleration.spec,
        seconds=seconds,
        denoise_seconds=denoise,
        decode_seconds=timings["decode"],
        stats=acceleration.stats(),
    )
