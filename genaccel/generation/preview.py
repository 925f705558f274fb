"""Live previews: every K denoising steps, the current estimate of the clean video, decoded by the light decoder.

`Previewer` wraps the pipeline scheduler's `step` for one generation (the instance attribute is removed
after, leaving the class's method). At a preview step it takes the clean-latent estimate the step makes
anyway: for flow-matching schedulers (Wan, HunyuanVideo, LTX-Video, Mochi; UniPC in flow mode) `sample -
sigma * model_output`, computed before the step moves its index; for the others the `pred_original_sample`
the step returns (DDIM, CogVideoX's DPM). The estimate goes through `LightDecoder.preview` (one frame per
latent frame, TAEHV's temporal upsampling off) and reaches the caller as a `Preview`. `generate` reports the
time previews took (`preview_seconds`), so their cost shows beside the run's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from genaccel.decoding.light import LightDecoder


@dataclass
class Preview:
    """One live preview: the video as it would be if denoising stopped after `step` of `total` steps."""

    step: int
    total: int
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1], one frame per latent frame


def _flow_matching(scheduler) -> bool:
    config = scheduler.config
    return hasattr(scheduler, "sigmas") and (
        "FlowMatch" in type(scheduler).__name__
        or getattr(config, "prediction_type", None) == "flow_prediction"
        or bool(getattr(config, "use_flow_sigmas", False))
    )


def clean_estimate_flow(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - sigma_t * v for a flow-matching scheduler, before its step moves the index."""
    index = scheduler.step_index
    if index is None:
        index = scheduler.index_for_timestep(timestep)
    sigma = scheduler.sigmas[index].to(sample.device, sample.dtype)
    return sample - sigma * model_output


class Previewer:
    """Calls `on_preview(Preview)` after every `every`-th denoising step of the generations it wraps."""

    def __init__(self, light: LightDecoder, on_preview: Callable[[Preview], None], every: int):
        if every < 1:
            raise ValueError("previews need a step interval of at least 1")
        self.light = light
        self.on_preview = on_preview
        self.every = every
        self.seconds = 0.0
        self.count = 0

    def wrap(self, pipe):
        """A context manager: `pipe.scheduler.step` previews while inside it."""
        return _Wrapped(self, pipe)

    def _emit(self, step: int, total: int, latents: torch.Tensor) -> None:
        start = time.perf_counter()
        frames = self.light.preview(latents)
        self.seconds += time.perf_counter() - start
        self.count += 1
        self.on_preview(Preview(step, total, frames))


class _Wrapped:
    def __init__(self, previewer: Previewer, pipe):
        self.previewer = previewer
        self.scheduler = pipe.scheduler

    def __enter__(self):
        previewer, scheduler = self.previewer, self.scheduler
        original = scheduler.step
        flow = _flow_matching(scheduler)
        steps = {"done": 0}

        def step(model_output, *args, **kwargs):
            steps["done"] += 1
            done = steps["done"]
            total = len(getattr(scheduler, "timesteps", ())) or done
            due = done % previewer.every == 0 and done < total
            if due and flow:
                timestep = args[0] if args else kwargs.get("timestep")
                sample = args[1] if len(args) > 1 else kwargs.get("sample")
                previewer._emit(done, total, clean_estimate_flow(scheduler, model_output, timestep, sample))
            result = original(model_output, *args, **kwargs)
            if due and not flow:
                estimate = getattr(result, "pred_original_sample", None)
                if estimate is None and isinstance(result, tuple) and len(result) > 1:
                    estimate = result[1]
                if isinstance(estimate, torch.Tensor):
                    previewer._emit(done, total, estimate)
            return result

        scheduler.step = step
        return previewer

    def __exit__(self, *exc):
        del self.scheduler.step  # back to the class's method
        return False
