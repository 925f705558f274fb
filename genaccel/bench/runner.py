"""The bench sweep: every configuration on the same prompts and seeds, interleaved, resumable.

Order: after a warm-up generation, the sweep walks (prompt, seed) items; for each item and each
repetition it runs every configuration once, starting the round at a different configuration
each time, so that slow drifts of the machine (heat, other processes) fall on all configurations
alike. The baseline (`none`) is always configuration 0.

A round (one item, one repetition, all configurations) is appended to DIR/results.jsonl in one
write once it is complete, so an interrupted sweep resumes at the first unfinished round.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from genaccel.bench.memory import PeakMemory
from genaccel.bench.quality import compare_videos
from genaccel.errors import InputError

RESULTS = "results.jsonl"
PLAN = "bench.json"
BASELINE = "none"


@dataclass
class BenchPlan:
    """What one sweep runs. Unset sizes/steps fall back to the model's `setting`."""

    accels: list[str]
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    setting: str = "default"
    num_inference_steps: int | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    guidance_scale: float | None = None
    repeat: int = 1
    warmup: int = 1

    def __post_init__(self):
        configs = [BASELINE] + [a.strip() for a in self.accels if a.strip().lower() != BASELINE]
        self.accels = list(dict.fromkeys(configs))  # baseline first, no duplicates, order kept
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise InputError("bench needs at least one prompt, and no empty ones")
        if not self.seeds:
            raise InputError("bench needs at least one seed")
        if any(s < 0 for s in self.seeds):
            raise InputError(f"seeds must be >= 0; got {self.seeds}")
        if self.repeat < 1:
            raise InputError(f"--repeat must be at least 1; got {self.repeat}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0; got {self.warmup}")

    def items(self) -> list[tuple[str, int]]:
        """(prompt, seed) pairs, prompt-major."""
        return [(p, s) for p in self.prompts for s in self.seeds]

    def rounds(self) -> list[tuple[int, int]]:
        """(item index, repetition) pairs in sweep order."""
        return [(i, r) for i in range(len(self.items())) for r in range(self.repeat)]

    def order(self, round_index: int) -> list[int]:
        """Configuration indices of one round: a rotation that moves by one every round."""
        n = len(self.accels)
        start = round_index % n
        return [(start + k) % n for k in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _request(plan: BenchPlan, prompt: str, seed: int):
    from genaccel.generate import GenerationRequest

    return GenerationRequest(
        prompt=prompt, seed=seed, setting=plan.setting, num_inference_steps=plan.num_inference_steps,
        num_frames=plan.num_frames, height=plan.height, width=plan.width, guidance_scale=plan.guidance_scale,
    )


def _adherence(frames: np.ndarray, prompt: str) -> dict | None:
    """The scorer's verdict for prompts of the shapes grammar (the embedded model's), else None."""
    from genaccel.score import score_frames
    from genaccel.shapes import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError:
        return None
    return score_frames(frames, prompt).to_dict()


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value


def _load_done(out_dir: Path) -> set[tuple[int, int]]:
    done = set()
    path = out_dir / RESULTS
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done.add((row["item"], row["repeat"]))
    return done


def _check_or_write_plan(out_dir: Path, meta: dict) -> None:
    path = out_dir / PLAN
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != meta:
            changed = sorted(k for k in set(previous) | set(meta) if previous.get(k) != meta.get(k))
            raise InputError(f"{out_dir} holds a different sweep (differs in: {', '.join(changed)}); "
                             "use another --out or delete it")
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)


def run_bench(pipe, plan: BenchPlan, out_dir: str | Path, *, progress: bool = True,
              on_round: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run (or resume) a sweep on a loaded pipeline; write DIR/results.jsonl and the report.

    Returns every result row of the sweep (earlier rows included when resuming).
    """
    from genaccel.acceleration import apply, pipeline_model_key, remove
    from genaccel.bench.report import write_compare_video, write_report
    from genaccel.generate import complete_request, generate
    from genaccel.spec import parse_spec, resolve
    from genaccel.pipelines.families import family_of

    family = family_of(pipe)
    key = pipeline_model_key(pipe)
    for spec in plan.accels:  # every spec must be valid for this model before anything runs
        resolve(parse_spec(spec, family, key), family)
    items = plan.items()
    for prompt, seed in items[:1]:
        complete_request(pipe, _request(plan, prompt, seed))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = str(getattr(pipe, "device", "cpu"))
    _check_or_write_plan(out_dir, {"model": key, "family": family.name, "device": device, **plan.to_dict()})
    done = _load_done(out_dir)
    rounds = plan.rounds()
    todo = [(k, rnd) for k, rnd in enumerate(rounds) if rnd not in done]
    n_configs = len(plan.accels)
    bar = tqdm(total=len(rounds) * n_configs, initial=(len(rounds) - len(todo)) * n_configs, desc="bench",
               unit="run", disable=not progress)
    try:
        if todo:
            for _ in range(plan.warmup):
                bar.set_postfix_str("warm-up")
                apply(pipe, BASELINE)
                generate(pipe, _request(plan, *items[todo[0][1][0]]))
        for round_index, (item, repetition) in todo:
            prompt, seed = items[item]
            frames, rows = {}, {}
            for position, config in enumerate(plan.order(round_index)):
                spec = plan.accels[config]
                bar.set_postfix_str(spec[:40])
                acceleration = apply(pipe, spec)
                with PeakMemory(device) as memory:
                    result = generate(pipe, _request(plan, prompt, seed))
                frames[config] = result.frames
                rows[config] = {
                    "config": config, "accel": spec, "resolved": acceleration.spec, "item": item,
                    "repeat": repetition, "position": position, **result.summary(),
                    "peak_memory_bytes": memory.peak_bytes, "memory_method": memory.method,
                }
                bar.update(1)
            baseline = frames[0]
            for config, row in rows.items():
                quality = compare_videos(baseline, frames[config]) if config else dict.fromkeys(("psnr", "ssim", "temporal_error", "lpips"))
                row.update(quality, psnr=_finite(quality["psnr"]), identical=bool(config) and quality["psnr"] == float("inf"))
                row["adherence"] = _adherence(frames[config], prompt)
            round_rows = [rows[c] for c in range(n_configs)]
            with (out_dir / RESULTS).open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in round_rows))
                f.flush()
                os.fsync(f.fileno())
            if item == 0 and repetition == 0:
                write_compare_video(out_dir / "compare.mp4", prompt, [(plan.accels[c], frames[c]) for c in range(n_configs)])
            if on_round is not None:
                on_round(round_rows)
    finally:
        bar.close()
        remove(pipe)
    rows = [json.loads(line) for line in (out_dir / RESULTS).read_text().splitlines() if line.strip()]
    write_report(out_dir, rows, plan)
    return rows
