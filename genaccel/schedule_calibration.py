"""Measure the span errors of a model and solve its computed-step schedules (`genaccel calibrate --schedule`).

For each calibration prompt and seed, the plain generation is the reference. Then, for every span
(i, j) with 2 <= j - i <= max_span, one generation computes every step except i+1 .. j-1, which reuse
step i's residual (the `schedule` accelerator with an explicit step list); the span's error is the mean
squared difference of its final video from the reference, averaged over prompts and seeds. The
schedules of every budget follow from those errors (genaccel/schedules.py) and are stored with them in
the model's profile under `[schedule.SETTING.stepsN]`, N the sampler's step count: a run follows the
schedules of its own setting, else those of the default setting (errors grow with the number of tokens, so
a larger setting may want its own).

Cost: one generation per span and prompt, about (max_span - 1) x steps generations per prompt (130 at
30 steps and max_span 6).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from genaccel.generate import generate
from genaccel.request import GenerationRequest
from genaccel.schedules import all_budgets, budget_key, schedule_key, skip_spans

DEFAULT_MAX_SPAN = 6


def _steps_spec(steps: int, skipped: range) -> str:
    kept = [s for s in range(steps) if s not in skipped]
    return "schedule(steps=[" + ";".join(map(str, kept)) + "])"


def measure_span_errors(pipe, prompts: list[str], *, seeds=(0,), base: GenerationRequest | None = None,
                        max_span: int = DEFAULT_MAX_SPAN, progress=None) -> tuple[int, dict[tuple[int, int], float]]:
    """(steps, {(i, j): mean squared error of the final video when steps i+1..j-1 reuse step i's residual})."""
    if max_span < 2:
        raise ValueError(f"max_span must be >= 2; got {max_span}")
    base = base or GenerationRequest()
    runs = [(p, s) for p in prompts for s in seeds]
    totals: dict[tuple[int, int], float] = {}
    done, total = 0, None
    for prompt, seed in runs:
        request = dataclasses.replace(base, prompt=prompt, seed=seed, accel="none")
        reference = generate(pipe, request)
        steps = reference.request.num_inference_steps
        spans = skip_spans(steps, max_span)
        total = total or len(runs) * (len(spans) + 1)
        done += 1
        if progress:
            progress(done, total)
        for i, j in spans:
            result = generate(pipe, dataclasses.replace(request, accel=_steps_spec(steps, range(i + 1, j))))
            error = float(np.mean((result.frames.astype(np.float64) - reference.frames) ** 2))
            totals[(i, j)] = totals.get((i, j), 0.0) + error / len(runs)
            done += 1
            if progress:
                progress(done, total)
    return steps, totals


def calibrate_schedule(pipe, prompts: list[str], *, seeds=(0,), base: GenerationRequest | None = None,
                       max_span: int = DEFAULT_MAX_SPAN, progress=None) -> dict:
    """Measure the span errors and solve every budget: the profile's `schedule` section,
    {"stepsN": {"max_span", "prompts", "errors": [[i, j, mse], ...], "computedB": [steps...], ...}}."""
    steps, errors = measure_span_errors(pipe, prompts, seeds=seeds, base=base, max_span=max_span, progress=progress)
    table = {"max_span": max_span, "prompts": len(prompts), "seeds": len(list(seeds)),
             "errors": [[i, j, float(f"{e:.6g}")] for (i, j), e in sorted(errors.items())]}
    for budget, path in all_budgets(steps, errors).items():
        table[budget_key(budget)] = path
    return {schedule_key(steps): table}


def merge_schedule(profile: dict, section: dict, setting: str = "default") -> dict:
    """`profile` with the schedules of `section` added under `setting` (replacing those of the same
    setting and step count)."""
    schedules = dict(profile.get("schedule", {}))
    schedules[setting] = {**schedules.get(setting, {}), **section}
    return {**profile, "schedule": schedules}
