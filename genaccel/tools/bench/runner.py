"""The bench sweep: every configuration on the same prompts and seeds, interleaved, resumable.

Order: after a warm-up generation, the sweep walks (prompt, seed) items; for each item and each
repetition it runs every configuration once, starting the round at a different configuration
each time, so that slow drifts of the machine (heat, other processes) fall on all configurations
alike. The baseline (`none`) is always configuration 0.

A round (one item, one repetition, all configurations) is appended to DIR/results.jsonl in one
write once it is complete, so an interrupted sweep resumes at the first unfinished round.

Every timed run is installed here with the state meter on (`install(..., meter_state=True)`,
genaccel/engine/acceleration.py; `generate` keeps an acceleration of the same spec), so each row's
accelerator stats carry `state_bytes`, the bytes their hooks held, measured.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from genaccel.errors import InputError
from genaccel.generation.request import GenerationRequest, request_from_options, split_configuration
from genaccel.io.files import check_or_write_plan, read_log, write_atomic
from genaccel.tools.bench.quality import compare_videos

RESULTS = "results.jsonl"
PLAN = "bench.json"
MEMORY = "memory.json"
BASELINE = "none"
# Request fields that vary within a sweep; every other field is the plan's, shared by all runs.
PER_RUN = ("prompt", "seed", "accel")


@dataclass
class BenchPlan:
    """What one sweep runs: every configuration on every (prompt, seed), with `request`'s other
    fields (setting, sizes, steps, guidance, negative prompt) shared by all runs."""

    accels: list[str]
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    request: GenerationRequest = field(default_factory=GenerationRequest)
    repeat: int = 1
    warmup: int = 1
    scorer: str = "shapes"  # adherence scorer (genaccel.pipelines.score.SCORERS), or "none"
    memory: str = "fresh"  # "fresh": peak memory of each configuration in a fresh process (CPU); "off"

    def __post_init__(self):
        from genaccel.generation.spec import check_spec
        from genaccel.pipelines.score import scorer_named

        configs = [BASELINE] + [a.strip() for a in self.accels if a.strip().lower() != BASELINE]
        self.accels = list(dict.fromkeys(configs))  # baseline first, no duplicates, order kept
        if not self.prompts:
            raise InputError("bench needs at least one prompt")
        if not self.seeds:
            raise InputError("bench needs at least one seed")
        for prompt in self.prompts:  # every prompt and seed as the request checks them
            for seed in self.seeds:
                self.run_request(prompt, seed, BASELINE)
        if self.repeat < 1:
            raise InputError(f"--repeat must be at least 1; got {self.repeat}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0; got {self.warmup}")
        if self.memory not in ("fresh", "off"):
            raise InputError(f"memory must be 'fresh' or 'off'; got '{self.memory}'")
        scorer_named(self.scorer)
        for config in self.accels:
            check_spec(split_configuration(config)[0])  # what needs no model: syntax, names, parameters, stacking

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

    def run_request(self, prompt: str, seed: int, config: str) -> GenerationRequest:
        """The request of one run: the plan's shared fields with this prompt, seed and configuration (a spec,
        and the fields that vary with it: "balanced; decoder=light"). The baseline always decodes with the
        full decoder: every PSNR is against the video as the model makes it."""
        spec, overrides = split_configuration(config)
        if config == BASELINE:
            overrides["decoder"] = "full"
        return request_from_options({"prompt": prompt, "seed": seed, "accel": spec, **overrides}, self.request)

    @property
    def custom_size(self) -> bool:
        """True when a field the setting provides (sizes, frames, steps, guidance) was set explicitly."""
        from genaccel.models.facts import DEFAULTED

        return any(getattr(self.request, name) is not None for name in DEFAULTED)

    def to_dict(self) -> dict[str, Any]:
        """What identifies the sweep (a resumed sweep must match it); memory does not change the runs."""
        shared = {k: v for k, v in self.request.to_dict().items() if k not in PER_RUN}
        return {
            "accels": self.accels,
            "prompts": self.prompts,
            "seeds": self.seeds,
            "request": shared,
            "repeat": self.repeat,
            "warmup": self.warmup,
            "scorer": self.scorer,
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value


def _load_done(out_dir: Path) -> set[tuple[int, int]]:
    """Rounds already in DIR/results.jsonl (a line cut short by a kill is dropped: its round reruns)."""
    return {(row["item"], row["repeat"]) for row in read_log(out_dir / RESULTS)}


def _atomic_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def _compiling(pipe, plan, item, facts) -> dict[int, object]:
    """The configurations that compile on their first run, by index, prepared for `item`: every one with the
    compile accelerator, and the first whose accelerators own the attention kernel (sparse attention compiles
    its kernel at the first call of each shape, shared by all of them)."""
    from genaccel.accelerators.base import KERNEL_NESTING, SLOT_COMPILE
    from genaccel.generation.prepare import prepare

    found, kernel_owner = {}, False
    for config, spec in enumerate(plan.accels):
        prepared = prepare(pipe, plan.run_request(*item, spec), facts)
        slots = set().union(*(cls.slots for cls, _ in prepared.spec.accelerators)) if prepared.spec else set()
        owns_kernel = bool(slots & set(KERNEL_NESTING))
        if SLOT_COMPILE in slots or (owns_kernel and not kernel_owner):
            found[config] = prepared
        kernel_owner = kernel_owner or owns_kernel
    return found


def run_bench(
    pipe,
    plan: BenchPlan,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_round: Callable[[list[dict]], None] | None = None,
    callback=None,
    model: str | None = None,
    device: str = "auto",
    save_videos: bool = False,
    facts=None,
) -> list[dict]:
    """Run (or resume) a sweep on a loaded pipeline; write DIR/results.jsonl and the report.

    `callback(step, total)` is passed to every generation (it may raise to stop the sweep).
    `model` (the name `pipe` was loaded by) lets CPU peak memory be measured in a fresh process per
    configuration. `save_videos` also writes each configuration's video of the first prompt to
    DIR/videos/<config>.mp4. Returns every result row of the sweep (earlier rows included when
    resuming). `facts`: the model's `ModelFacts` when the caller read them (else read here, once).
    """
    from genaccel.engine.acceleration import install, remove
    from genaccel.generation.generate import generate
    from genaccel.generation.prepare import prepare
    from genaccel.io.video import write_video
    from genaccel.models.facts import ModelFacts
    from genaccel.pipelines.score import scorer_named
    from genaccel.tools.bench.memory import CudaPeakMemory
    from genaccel.tools.bench.report import write_compare_video, write_report

    items = plan.items()
    facts = facts or ModelFacts.of(pipe)  # the model's profiles, read once for the whole sweep
    first = [prepare(pipe, plan.run_request(*items[0], spec), facts) for spec in plan.accels]  # errors before any work
    for prepared in first:  # accelerators check what they need (a calibrated profile) when built: build each once
        if prepared.spec is not None:
            install(pipe, prepared.spec, facts.profile)
    remove(pipe)
    family, key = facts.family, facts.key
    scorer = scorer_named(plan.scorer)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe_device = str(getattr(pipe, "device", "cpu"))
    check_or_write_plan(
        out_dir / PLAN,
        {"model": key, "family": family.name, "device": pipe_device, **plan.to_dict()},
        "a different sweep",
    )
    done = _load_done(out_dir)
    rounds = plan.rounds()
    todo = [(k, rnd) for k, rnd in enumerate(rounds) if rnd not in done]
    n_configs = len(plan.accels)
    bar = tqdm(
        total=len(rounds) * n_configs,
        initial=(len(rounds) - len(todo)) * n_configs,
        desc="bench",
        unit="run",
        disable=not progress,
    )
    try:
        compile_seconds: dict[int, float] = {}  # per configuration: compiling in its warm-up, not in a timed run
        if todo:
            warm_item = items[todo[0][1][0]]
            for _ in range(plan.warmup):
                bar.set_postfix_str("warm-up")
                generate(pipe, prepare(pipe, plan.run_request(*warm_item, BASELINE), facts), callback=callback)
                for config, compiling in _compiling(pipe, plan, warm_item, facts).items():
                    result = generate(pipe, compiling, callback=callback)
                    seconds = result.stats.get("accelerators", {}).get("compile", {}).get("compile_seconds")
                    if seconds is not None:
                        compile_seconds[config] = compile_seconds.get(config, 0.0) + seconds
        for round_index, (item, repetition) in todo:
            prompt, seed = items[item]
            frames, rows = {}, {}
            for position, config in enumerate(plan.order(round_index)):
                spec = plan.accels[config]
                bar.set_postfix_str(spec[:40])
                prepared = prepare(pipe, plan.run_request(prompt, seed, spec), facts)
                with CudaPeakMemory(pipe_device) as memory:
                    install(pipe, prepared.spec, facts.profile, meter_state=True)  # generate runs it as it is
                    result = generate(pipe, prepared, callback=callback)
                frames[config] = result.frames
                rows[config] = {
                    **result.summary(),
                    "config": config,
                    "accel": spec,
                    "resolved": result.request.accel,
                    "item": item,
                    "repeat": repetition,
                    "position": position,
                    "peak_memory_bytes": memory.peak_bytes,
                    "memory_method": memory.method,
                    "compile_seconds": compile_seconds.get(config),
                }
                bar.update(1)
            baseline = frames[0]
            for config, row in rows.items():
                quality = (
                    compare_videos(baseline, frames[config])
                    if config
                    else dict.fromkeys(("psnr", "ssim", "temporal_error", "lpips"))
                )
                row.update(
                    quality, psnr=_finite(quality["psnr"]), identical=bool(config) and quality["psnr"] == float("inf")
                )
                row["adherence"] = scorer.score(frames[config], prompt) if scorer and scorer.applies(prompt) else None
            round_rows = [rows[c] for c in range(n_configs)]
            with (out_dir / RESULTS).open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in round_rows))
                f.flush()
                os.fsync(f.fileno())
            if item == 0 and repetition == 0:
                write_compare_video(
                    out_dir / "compare.mp4", prompt, [(plan.accels[c], frames[c]) for c in range(n_configs)]
                )
                if save_videos:
                    for c in range(n_configs):
                        write_video(frames[c], video_path(out_dir, c))
            if on_round is not None:
                on_round(round_rows)
    finally:
        bar.close()
        remove(pipe)
    memory = _fresh_process_memory(out_dir, plan, model, device, progress) if plan.memory == "fresh" else {}
    rows = [json.loads(line) for line in (out_dir / RESULTS).read_text().splitlines() if line.strip()]
    write_report(out_dir, rows, plan, memory)
    return rows


def video_path(out_dir: str | Path, config: int) -> Path:
    """Where `run_bench(save_videos=True)` writes configuration `config`'s video of the first prompt."""
    return Path(out_dir) / "videos" / f"{config}.mp4"


def read_memory(out_dir: str | Path) -> dict:
    """The fresh-process peak memory of each configuration of a sweep (DIR/memory.json), if measured."""
    path = Path(out_dir) / MEMORY
    return json.loads(path.read_text()) if path.is_file() else {}


def _fresh_process_memory(out_dir: Path, plan: BenchPlan, model: str | None, device: str, progress: bool) -> dict:
    """CPU peak memory of each configuration: one run of the first prompt in a fresh process (the
    only figure that says what a run needs: a warm process holds memory freed by earlier runs).
    Kept in DIR/memory.json, so a resumed sweep measures only what is missing."""
    from genaccel.generation.load import resolve_device
    from genaccel.tools.bench.memory import measure_configs

    if model is None or resolve_device(device).type == "cuda":
        return {}  # no loadable name, or CUDA, where every run's peak was measured in-process
    request = {k: v for k, v in plan.run_request(*plan.items()[0], BASELINE).to_dict().items() if k != "accel"}
    return measure_configs(model, "cpu", request, plan.accels, path=out_dir / MEMORY, progress=progress)
