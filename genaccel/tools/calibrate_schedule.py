"""Measure the span errors of a model and solve its computed-step schedules (`genaccel calibrate --schedule`).

For each calibration prompt and seed, the plain generation is the reference. Then, for every span
(i, j) with 2 <= j - i <= max_span, one generation computes every step except i+1 .. j-1, which reuse
step i's residual (the `schedule` accelerator with an explicit step list); the span's error is the mean
squared difference of its final video from the reference, averaged over prompts and seeds. The
schedules of every budget follow from those errors (genaccel/accelerators/schedule.py) and are stored with them in
the model's profile under `[schedule.SETTING.stepsN]`, N the sampler's step count: a run follows the
schedules of its own setting, else those of the default setting (errors grow with the number of tokens, so
a larger setting may want its own).

Cost: one generation per span and prompt, about (max_span - 1) x steps generations per prompt (130 at
30 steps and max_span 6): an hour or more at a large setting. With a log, every span is recorded as it is
measured, so a calibration stopped part-way resumes where it was.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from genaccel.accelerators.schedule import all_budgets, budget_key, schedule_key, skip_spans
from genaccel.errors import InputError
from genaccel.generation.generate import generate
from genaccel.generation.prepare import prepare
from genaccel.generation.request import GenerationRequest
from genaccel.io.files import append_line, read_log
from genaccel.models.facts import ModelFacts

DEFAULT_MAX_SPAN = 6


def _steps_spec(steps: int, skipped: range) -> str:
    kept = [s for s in range(steps) if s not in skipped]
    return "schedule(steps=[" + ";".join(map(str, kept)) + "])"


def _open_log(log: Path, plan: dict) -> dict[tuple, float]:
    """The spans a stopped calibration with this `plan` measured, {(run, i, j): mse}; a new log starts with
    the plan. InputError when the log holds another calibration."""
    rows = read_log(log)
    if not rows:
        append_line(log, json.dumps({"plan": plan}))
        return {}
    previous = rows[0].get("plan", {})
    if previous != plan:
        changed = sorted(k for k in set(previous) | set(plan) if previous.get(k) != plan.get(k))
        raise InputError(
            f"{log} holds another calibration (differs in: {', '.join(changed)}); delete it to start again"
        )
    return {(r["run"], r["i"], r["j"]): r["mse"] for r in rows[1:]}


def measure_span_errors(
    pipe,
    prompts: list[str],
    *,
    seeds=(0,),
    base: GenerationRequest | None = None,
    max_span: int = DEFAULT_MAX_SPAN,
    progress=None,
    log: Path | None = None,
) -> tuple[int, dict[tuple[int, int], float]]:
    """(steps, {(i, j): mean squared error of the final video when steps i+1..j-1 reuse step i's residual}).

    With `log` (a JSON-lines file), each span's error is appended as it is measured, and the spans already
    there are not measured again (the file's first line, the calibration's plan, must match)."""
    if max_span < 2:
        raise ValueError(f"max_span must be >= 2; got {max_span}")
    base = base or GenerationRequest()
    runs = [(p, s) for p in prompts for s in seeds]
    plan = {
        "prompts": list(prompts),
        "seeds": list(seeds),
        "max_span": max_span,
        "request": {k: v for k, v in base.to_dict().items() if k not in ("prompt", "seed", "accel")},
    }
    measured = _open_log(Path(log), plan) if log is not None else {}
    totals: dict[tuple[int, int], float] = {}
    done, total = 0, None
    facts = ModelFacts.of(pipe)  # the model's profiles, read once for every run
    for run, (prompt, seed) in enumerate(runs):
        request = dataclasses.replace(base, prompt=prompt, seed=seed, accel="none")
        reference = None
        steps = prepare(pipe, request, facts).request.num_inference_steps
        spans = skip_spans(steps, max_span)
        total = total or len(runs) * (len(spans) + 1)
        done += 1
        for i, j in spans:
            error = measured.get((run, i, j))
            if error is None:
                if reference is None:  # made only when this run has spans left to measure
                    reference = generate(pipe, request, facts=facts)
                result = generate(
                    pipe, dataclasses.replace(request, accel=_steps_spec(steps, range(i + 1, j))), facts=facts
                )
                error = float(np.mean((result.frames.astype(np.float64) - reference.frames) ** 2))
                if log is not None:
                    append_line(Path(log), json.dumps({"run": run, "i": i, "j": j, "mse": error}))
            totals[(i, j)] = totals.get((i, j), 0.0) + error / len(runs)
            done += 1
            if progress:
                progress(done, total)
    return steps, totals


def calibrate_schedule(
    pipe,
    prompts: list[str],
    *,
    seeds=(0,),
    base: GenerationRequest | None = None,
    max_span: int = DEFAULT_MAX_SPAN,
    progress=None,
    log: Path | None = None,
) -> dict:
    """Measure the span errors (resuming from `log`, see `measure_span_errors`) and solve every budget: the
    profile's `schedule` section for one setting, {"stepsN": {"max_span", "prompts", "errors": [[i, j, mse],
    ...], "computedB": [steps...], ...}}."""
    steps, errors = measure_span_errors(
        pipe, prompts, seeds=seeds, base=base, max_span=max_span, progress=progress, log=log
    )
    table = {
        "max_span": max_span,
        "prompts": len(prompts),
        "seeds": len(list(seeds)),
        "errors": [[i, j, float(f"{e:.6g}")] for (i, j), e in sorted(errors.items())],
    }
    for budget, path in all_budgets(steps, errors).items():
        table[budget_key(budget)] = path
    return {schedule_key(steps): table}


def merge_schedule(profile: dict, section: dict, setting: str = "default") -> dict:
    """`profile` with the schedules of `section` added under `setting` (replacing those of the same
    setting and step count)."""
    schedules = dict(profile.get("schedule", {}))
    schedules[setting] = {**schedules.get(setting, {}), **section}
    return {**profile, "schedule": schedules}
