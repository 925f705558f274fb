"""`genaccel tune`: the fastest stack whose quality stays within the user's budget, on their model.

The search (optuna, multi-objective: speedup and PSNR, with the quality budget as constraints) proposes
a stack and its parameters from `SPACE`, which lists, as data, each group of accelerators that can go into
one stack. A trial runs on the tuning prompts one at a time, paired with the baseline video of the same
prompt and seed (made once, after a warm-up): PSNR against it, adherence by the bench's scorer, speedup
as the median of per-prompt time ratios. A trial that is clearly bad after its first prompt (PSNR more
than `PRUNE_MARGIN_DB` under the budget, or slower than the baseline) stops there. A stack proposed again
is not run again: its first measurement is reused (logged with `reused`), and `MAX_REPEATS` such
proposals in a row end the search (it has converged, or the space is small).

Every finished trial is one line of DIR/trials.jsonl, so a stopped tune resumes where it was, and a
tune with another budget on the same DIR starts from every trial measured so far (first finishing the
trials a stricter budget stopped early that this one would have run to the end). When the time is up,
the front (the trials no other beats on both speed and PSNR, within the budget) is measured again with
`genaccel bench` on held-out prompts, and the fastest member that keeps the budget there is the winner:
printed, plotted (DIR/pareto-BUDGET.png) and, with `save_as`, stored as a named preset in the model's profile.

Determinism: the sampler is seeded, and PSNR and adherence are the same on every run; the speeds are
measured, so two tunes with one seed propose the same trials as long as measured speeds order them alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genaccel.decoding.light import LIGHT
from genaccel.errors import InputError
from genaccel.generation.request import GenerationRequest, split_configuration
from genaccel.io.files import append_line, check_or_write_plan, read_log

TRIALS = "trials.jsonl"
PLAN = "tune.json"
PRUNE_MARGIN_DB = 3.0
RETIME_MINUTES = 3.0  # the first prompt's baseline is timed again after this long: the machine drifts
FRONT_MAX = 6  # front members measured again on the held-out prompts
MAX_REPEATS = 25  # proposals in a row of stacks already measured: the search has converged
FIGURES = ("spec", "psnr", "speedup", "adherence_drop", "prompts_run", "pruned", "psnrs", "speedups")


# ----------------------------------------------------------------------------- the search space
@dataclass(frozen=True)
class Param:
    """One parameter of one accelerator in the search: a float (log scale or not) or an int range."""

    name: str
    low: float
    high: float
    kind: str = "float"  # "float", "log" (float on a log scale) or "int"


@dataclass(frozen=True)
class Option:
    """One accelerator a group may take, with the parameters searched and those fixed."""

    accel: str
    params: tuple[Param, ...] = ()
    fixed: str = ""  # extra parameters, e.g. "cross=4"


# Each group contributes at most one accelerator to a stack; "none" is always a choice. Groups are
# chosen so their members stack with every member of the other groups.
SPACE: dict[str, tuple[Option, ...]] = {
    "pass": (
        Option(
            "magcache",
            (Param("threshold", 0.05, 1.5, "log"), Param("max_skip", 2, 10, "int"), Param("retention", 0.0, 0.3)),
        ),
        Option("schedule", (Param("budget", 0, 0, "int"),)),  # range from the model's calibrated schedules
        Option("teacache", (Param("threshold", 0.02, 0.6, "log"),)),
        Option("fbcache", (Param("threshold", 0.02, 0.3, "log"),)),
    ),
    "cfg": (Option("cfgcache", (Param("interval", 2, 6, "int"),)),),
    "attention": (Option("pab", (Param("spatial", 2, 4, "int"), Param("cross", 2, 8, "int"))),),
    "tokens": (Option("tome", (Param("ratio", 0.1, 0.5), Param("dense_steps", 4, 12, "int"))),),
    "sparse": (Option("svg", (Param("density", 0.15, 0.5), Param("dense_steps", 6, 15, "int"))),),
    # System-level multipliers: they change how the same passes run, so they stack with every group above.
    "compile": (Option("compile"),),
    "quant": (Option("quant", fixed="weights=int8,activations=int8"),),  # where torchao is installed
    # Not an accelerator: the request's decoder, "light" where the model has a light decoder (it only changes
    # the decode, so it stacks with everything). A trial with it is the configuration "SPEC; decoder=light".
    "decoder": (Option(LIGHT),),
}
DEFAULT_GROUPS = ("pass", "cfg", "attention", "compile", "quant", "decoder")


def search_space(
    family,
    profile: dict,
    num_steps: int,
    groups=DEFAULT_GROUPS,
    setting: str = "default",
    light_decoder: bool = False,
) -> dict[str, tuple[Option, ...]]:
    """The groups' options that can run on this model: supported by the family, calibrated where they
    need a profile (magcache's ratios, schedule's schedules for this step count and setting), the decoder
    group where the model has a light decoder (`light_decoder`)."""
    from genaccel.accelerators import unsupported_reason
    from genaccel.accelerators.schedule import schedule_key, schedule_tables

    unknown = [g for g in groups if g not in SPACE]
    if unknown:
        raise InputError(f"--search {','.join(unknown)}: unknown group (known: {', '.join(SPACE)})")
    from genaccel.accelerators.quant import torchao_available

    space = {}
    for group in groups:
        if group == "decoder":
            if light_decoder:
                space[group] = SPACE[group]
            continue
        options = []
        for option in SPACE[group]:
            if unsupported_reason(option.accel, family):
                continue
            if option.accel == "quant" and not torchao_available():
                continue
            if option.accel == "magcache" and not profile.get("magcache", {}).get("ratios"):
                continue
            if option.accel == "schedule":
                table = schedule_tables(profile, setting).get(schedule_key(num_steps), {})
                budgets = sorted(int(k.removeprefix("computed")) for k in table if k.startswith("computed"))
                if not budgets:
                    continue
                option = Option("schedule", (Param("budget", budgets[0], budgets[-1], "int"),))
            options.append(option)
        if options:
            space[group] = tuple(options)
    return space


def suggest_spec(trial, space: dict[str, tuple[Option, ...]]) -> str:
    """Ask `trial` (an optuna trial) for one stack of `space`; its spec string ("none" for none). A choice
    that cannot stack with an earlier group's (PAB's full-length attention outputs with token merging) is
    left out of the stack."""
    from genaccel.generation.spec import stack_conflict

    parts, chosen, decoder = [], [], ""
    for group, options in space.items():
        if group == "decoder":
            decoder = trial.suggest_categorical(group, ["full", LIGHT])
            continue
        choice = trial.suggest_categorical(group, ["none", *(o.accel for o in options)])
        if choice == "none" or any(stack_conflict(earlier, choice) for earlier in chosen):
            continue
        chosen.append(choice)
        option = next(o for o in options if o.accel == choice)
        values = []
        for p in option.params:
            key = f"{choice}.{p.name}"
            if p.kind == "int":
                value = trial.suggest_int(key, int(p.low), int(p.high))
            else:
                value = round(trial.suggest_float(key, p.low, p.high, log=p.kind == "log"), 4)
            values.append(f"{p.name}={value}")
        if option.fixed:
            values.append(option.fixed)
        parts.append(f"{choice}({','.join(values)})")
    spec = "+".join(parts) or "none"
    return f"{spec}; decoder={LIGHT}" if decoder == LIGHT else spec


def starting_points(space: dict[str, tuple[Option, ...]], specs: list[str]) -> list[dict[str, Any]]:
    """Trial parameters for the stacks among `specs` (spec strings: the model's current presets) that `space`
    can express, each parameter left out taking its config default; the others are skipped."""
    points = []
    for spec in specs:
        params = _params_of(spec, space)
        if params is not None and params not in points:
            points.append(params)
    return points


def _params_of(spec: str, space: dict[str, tuple[Option, ...]]) -> dict[str, Any] | None:
    """The trial parameters that make `suggest_spec` give `spec`; None if `space` cannot express it."""
    from genaccel.errors import SpecError
    from genaccel.generation.spec import build_config, parse_spec_string

    try:
        spec, overrides = split_configuration(spec)
        requests = parse_spec_string(spec) if spec != "none" else []
    except (SpecError, InputError):
        return None
    params: dict[str, Any] = {group: "none" for group in space}
    if "decoder" in space:
        params["decoder"] = "light" if overrides.get("decoder") == LIGHT else "full"
    elif overrides.get("decoder", "full") != "full":
        return None
    for request in requests:
        found = [(g, o) for g, options in space.items() for o in options if o.accel == request.name]
        if not found or params[found[0][0]] != "none":
            return None  # not searched here, or two of one group
        group, option = found[0]
        fixed = dict(item.split("=", 1) for item in option.fixed.split(",") if item)
        if set(request.params) - {p.name for p in option.params} - set(fixed):
            return None  # a parameter the search keeps at its default
        _, config = build_config(request)
        params[group] = request.name
        for p in option.params:
            value = getattr(config, p.name)
            if not p.low <= value <= p.high:
                return None
            params[f"{request.name}.{p.name}"] = int(value) if p.kind == "int" else float(value)
    return params if any(v not in ("none", "full") for v in params.values()) else None


# ----------------------------------------------------------------------------- the plan
@dataclass
class TunePlan:
    """What one tune searches for: the quality budget, the prompts, the setting and the time."""

    min_psnr: float
    prompts: list[str]
    holdout: list[str]
    max_adherence_drop: float | None = None  # points (percent of prompts); None: adherence not bounded
    seeds: list[int] = field(default_factory=lambda: [0])
    request: GenerationRequest = field(default_factory=GenerationRequest)
    minutes: float = 30.0
    max_trials: int | None = None
    seed: int = 0
    groups: tuple[str, ...] = DEFAULT_GROUPS
    scorer: str = "shapes"

    def __post_init__(self):
        if not math.isfinite(self.min_psnr) or not 0 < self.min_psnr < 100:
            raise InputError(f"--min-psnr {self.min_psnr}: must be within 0..100 dB")
        if self.max_adherence_drop is not None and not 0 <= self.max_adherence_drop <= 100:
            raise InputError(f"--max-adherence-drop {self.max_adherence_drop}: must be within 0..100 points")
        if not math.isfinite(self.minutes) or self.minutes < 0:
            raise InputError(f"--minutes {self.minutes}: must be >= 0")
        if self.max_trials is not None and self.max_trials < 0:
            raise InputError(f"--trials {self.max_trials}: must be >= 0")
        if not self.prompts:
            raise InputError("tune needs tuning prompts")
        if not self.holdout:
            raise InputError("tune needs held-out prompts (--holdout FILE, or a --prompts file of 2 or more)")
        if set(self.prompts) & set(self.holdout):
            raise InputError("the held-out prompts must differ from the tuning prompts")

    def items(self) -> list[tuple[str, int]]:
        return [(p, s) for p in self.prompts for s in self.seeds]

    def identity(self) -> dict[str, Any]:
        """What the trial log's figures depend on (a resumed tune must match it; the budget may change)."""
        shared = {k: v for k, v in self.request.to_dict().items() if k not in ("prompt", "seed", "accel")}
        return {
            "prompts": self.prompts,
            "seeds": self.seeds,
            "request": shared,
            "seed": self.seed,
            "groups": list(self.groups),
            "scorer": self.scorer,
        }

    def constraints(self, psnr: float | None, drop: float | None) -> list[float]:
        """optuna constraints (<= 0 is kept): PSNR over the bound, adherence drop under it."""
        values = [self.min_psnr - (psnr if psnr is not None else -1e9)]
        if self.max_adherence_drop is not None:
            values.append((drop or 0.0) - self.max_adherence_drop)
        return values

    def keeps(self, psnr: float | None, drop: float | None) -> bool:
        return all(c <= 0 for c in self.constraints(psnr, drop))


def split_prompts(prompts: list[str]) -> tuple[list[str], list[str]]:
    """Tuning and held-out prompts from one list: every third prompt is held out."""
    return [p for i, p in enumerate(prompts) if i % 3 != 2], [p for i, p in enumerate(prompts) if i % 3 == 2]


# ----------------------------------------------------------------------------- measuring
@dataclass
class Baseline:
    frames: dict[int, Any]
    seconds: dict[int, float]
    adherence: dict[int, bool | None]

    def drift(self, first_seconds: float) -> None:
        """The first prompt's baseline took `first_seconds` now: scale every baseline time alike (the
        machine's speed drifts by tens of percent over minutes; timing every prompt again would cost a
        baseline video per prompt)."""
        factor = first_seconds / self.seconds[0]
        self.seconds = {k: v * factor for k, v in self.seconds.items()}


def _adherence(scorer, frames, prompt) -> bool | None:
    return bool(scorer.score(frames, prompt)["correct"]) if scorer and scorer.applies(prompt) else None


def _run_baseline(pipe, plan: TunePlan, scorer, callback=None, facts=None) -> Baseline:
    frames, seconds, adherence = {}, {}, {}
    for index, (prompt, seed) in enumerate(plan.items()):
        result = _run(pipe, facts, plan, prompt, seed, "none", callback)
        frames[index], seconds[index] = result.frames, result.seconds
        adherence[index] = _adherence(scorer, result.frames, prompt)
    return Baseline(frames, seconds, adherence)


def _time_first(pipe, plan: TunePlan, callback=None, facts=None) -> float:
    return _run(pipe, facts, plan, *plan.items()[0], "none", callback).seconds


def _request(plan: TunePlan, prompt: str, seed: int, config: str) -> GenerationRequest:
    """The request of one run: the plan's with this prompt, seed and configuration ("SPEC; decoder=light")."""
    spec, overrides = split_configuration(config)
    return dataclasses.replace(plan.request, prompt=prompt, seed=seed, accel=spec, **overrides)


def _run(pipe, facts, plan: TunePlan, prompt: str, seed: int, spec: str, callback=None):
    """One generation of the tune, prepared with the model's facts read once for the whole tune."""
    from genaccel.generation.generate import generate

    return generate(pipe, _request(plan, prompt, seed, spec), facts=facts, callback=callback)


def _evaluate(pipe, plan: TunePlan, spec: str, baseline: Baseline, scorer, callback=None, facts=None) -> dict[str, Any]:
    """Run one stack on the tuning prompts (stopping early when clearly bad); its figures."""
    from genaccel.tools.bench.quality import psnr as psnr_of
    from genaccel.tools.bench.report import PSNR_CAP

    psnrs, ratios, hits, bases = [], [], [], []
    pruned = False
    _warm_compilation(pipe, facts, plan, spec, callback)
    for index, (prompt, seed) in enumerate(plan.items()):
        result = _run(pipe, facts, plan, prompt, seed, spec, callback)
        value = psnr_of(baseline.frames[index], result.frames)
        psnrs.append(min(value, PSNR_CAP))
        ratios.append(baseline.seconds[index] / max(result.seconds, 1e-9))
        hit = _adherence(scorer, result.frames, prompt)
        if hit is not None and baseline.adherence[index] is not None:
            hits.append(hit)
            bases.append(baseline.adherence[index])
        if index == 0 and len(plan.items()) > 1 and _prunes(plan, psnrs[0], ratios[0]):
            pruned = True
            break
    drop = 100.0 * (sum(bases) - sum(hits)) / len(hits) if hits else None
    return {
        "spec": spec,
        "psnr": round(statistics.fmean(psnrs), 3),
        "speedup": round(statistics.median(ratios), 4),
        "adherence_drop": None if drop is None else round(drop, 2),
        "prompts_run": len(psnrs),
        "pruned": pruned,
        "psnrs": [round(v, 3) for v in psnrs],
        "speedups": [round(r, 4) for r in ratios],
    }


def _warm_compilation(pipe, facts, plan: TunePlan, spec: str, callback=None) -> None:
    """Compile a stack's graphs in an untimed run before its timed ones, once per process and compiled form.
    The graphs depend on the compile and quant configurations and on which accelerators hook the model (their
    hooks set the graph boundaries), not on those accelerators' parameters; dynamo's cache keeps them across
    installs. So compile time counts once per form, never in a trial."""
    from genaccel.generation.spec import format_spec, parse_spec_string

    accel = split_configuration(spec)[0]
    requests = parse_spec_string(accel) if accel != "none" else []
    if not any(r.name == "compile" for r in requests):
        return
    systems = [r for r in requests if r.name in ("compile", "quant")]
    form = (id(pipe), format_spec(systems), frozenset(r.name for r in requests))
    if form not in _WARMED:
        _run(pipe, facts, plan, *plan.items()[0], spec, callback)
        _WARMED.add(form)


_WARMED: set[tuple] = set()  # the compiled forms warmed in this process (see _warm_compilation)


def _has_light_decoder(pipe, family) -> bool:
    """Whether the model has a light decoder (its own: the search does not guess a weights file)."""
    from genaccel.decoding.light import light_decoder_for

    try:
        return light_decoder_for(pipe, family, "full", for_preview=True) is not None
    except InputError:
        return False


def _prunes(plan: TunePlan, first_psnr: float, first_speedup: float) -> bool:
    """Whether a stack's figures on the first tuning prompt make it clearly bad for this budget."""
    return first_psnr < plan.min_psnr - PRUNE_MARGIN_DB or first_speedup < 1.0


def _unfinished(plan: TunePlan, row: dict) -> bool:
    """A logged trial stopped after the first prompt under a stricter budget that this budget would have
    run to the end (a `fast` tune reusing the log of a `balanced` one): it is measured again, in full."""
    return row["pruned"] and not _prunes(plan, row["psnrs"][0], row["speedups"][0])


# ----------------------------------------------------------------------------- the trial log
def _study(plan: TunePlan, log: list[dict]):
    """A seeded optuna study holding every logged trial, with the constraints of this plan's budget."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.samplers._base import _CONSTRAINTS_KEY
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def constraints(frozen):  # set on each trial before it is told (see run_tune)
        return frozen.user_attrs.get("constraints") or plan.constraints(None, None)

    with warnings.catch_warnings():  # multivariate, group and constraints are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=plan.seed, multivariate=True, group=True, n_startup_trials=8, constraints_func=constraints
        )
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    for row in log:
        distributions = {k: json_to_distribution(v) for k, v in row["distributions"].items()}
        done = not row["pruned"]
        study.add_trial(
            optuna.trial.create_trial(
                params=row["params"],
                distributions=distributions,
                values=[row["speedup"], row["psnr"]] if done else None,
                state=TrialState.COMPLETE if done else TrialState.PRUNED,
                user_attrs={"constraints": plan.constraints(row["psnr"], row["adherence_drop"])},
                # added trials skip the sampler's after-trial step, which records constraints where it reads them
                system_attrs={_CONSTRAINTS_KEY: plan.constraints(row["psnr"], row["adherence_drop"])},
            )
        )
    return study


# ----------------------------------------------------------------------------- the front
def pareto_front(rows: list[dict], plan: TunePlan) -> list[dict]:
    """The finished trials within the budget that no other such trial beats on both speedup and PSNR,
    fastest first (one row per spec)."""
    kept = {}
    for row in rows:
        if not row["pruned"] and row["spec"] != "none" and plan.keeps(row["psnr"], row["adherence_drop"]):
            kept.setdefault(row["spec"], row)
    rows = list(kept.values())
    front = [
        r
        for r in rows
        if not any(
            o["speedup"] >= r["speedup"]
            and o["psnr"] >= r["psnr"]
            and (o["speedup"], o["psnr"]) != (r["speedup"], r["psnr"])
            for o in rows
        )
    ]
    return sorted(front, key=lambda r: -r["speedup"])


@dataclass
class TuneResult:
    trials: list[dict]
    front: list[dict]  # on the tuning prompts, fastest first
    holdout: list[dict]  # the bench's summary rows of the front on the held-out prompts (baseline first)
    winner: dict | None  # the held-out row of the fastest front member within the budget there
    tuning_seconds: float


def run_tune(
    pipe,
    plan: TunePlan,
    out_dir: str | Path,
    *,
    progress: bool = True,
    model: str | None = None,
    callback: Callable | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Search (or resume searching) for `plan`; measure the front on the held-out prompts; see the module
    docstring. `callback(step, total)` goes to every generation (it may raise to stop)."""
    import optuna
    from optuna.distributions import distribution_to_json
    from tqdm import tqdm

    from genaccel.engine.acceleration import remove
    from genaccel.generation.prepare import prepare
    from genaccel.models.facts import ModelFacts
    from genaccel.pipelines.score import scorer_named

    out_dir = Path(out_dir)
    facts = ModelFacts.of(pipe)
    prepared = prepare(pipe, _request(plan, plan.prompts[0], plan.seeds[0], "none"), facts)
    num_steps = prepared.request.num_inference_steps
    groups = plan.groups
    if plan.request.attention == "flex":  # compile refuses diffusers' flex backend (accelerators/compilation.py)
        groups = tuple(g for g in groups if g != "compile")
    light = "decoder" in groups and _has_light_decoder(pipe, facts.family)
    space = search_space(facts.family, facts.profile, num_steps, groups, plan.request.setting, light)
    if not space:
        raise InputError(f"nothing to search on this model in groups {', '.join(plan.groups)}")
    scorer = scorer_named(plan.scorer)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_or_write_plan(out_dir / PLAN, {"model": facts.key, **plan.identity()}, "a tune of something else")
    log = read_log(out_dir / TRIALS)
    study = _study(plan, log)
    # The model's presets for this setting are where the search starts: a tune can only improve on them.
    current = list(facts.presets(plan.request.setting).values())
    tried = [row["params"] for row in log]
    for params in starting_points(space, current):
        if params not in tried:
            study.enqueue_trial(params)
    # Then the stacks an earlier, stricter tune stopped early but this budget keeps in play, fastest first.
    finished = {row["spec"] for row in log if not row["pruned"]}
    revisit = {row["spec"]: row for row in log if _unfinished(plan, row) and row["spec"] not in finished}
    for row in sorted(revisit.values(), key=lambda r: -r["speedups"][0]):
        study.enqueue_trial(row["params"])
    start = clock()
    deadline = start + 60.0 * plan.minutes
    limit = plan.max_trials if plan.max_trials is not None else 10**9
    new = 0
    bar = tqdm(
        total=None if plan.max_trials is None else plan.max_trials, desc="tune", unit="trial", disable=not progress
    )
    try:
        if plan.minutes > 0 and limit > 0:
            bar.set_postfix_str("baseline")
            _run(pipe, facts, plan, *plan.items()[0], "none")  # warm-up, not timed
            baseline = _run_baseline(pipe, plan, scorer, callback, facts=facts)
            timed = clock()
            measured = {
                row["spec"]: row
                for row in reversed(log)  # the first full measurement of each
                if "reused" not in row and not _unfinished(plan, row)
            }
            repeats = 0
            while new < limit and clock() < deadline:
                trial = study.ask()
                spec = suggest_spec(trial, space)
                bar.set_postfix_str(spec[:50])
                earlier = measured.get(spec)
                if earlier is not None:  # the same stack again: quality is deterministic, its speed measured
                    figures = {k: earlier[k] for k in FIGURES} | {"reused": earlier["number"]}
                    repeats += 1
                else:
                    figures = _evaluate(pipe, plan, spec, baseline, scorer, callback, facts=facts)
                    repeats = 0
                row = {
                    "number": trial.number,
                    "params": trial.params,
                    "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
                    **figures,
                }
                measured.setdefault(spec, row)
                trial.set_user_attr("constraints", plan.constraints(figures["psnr"], figures["adherence_drop"]))
                if figures["pruned"]:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, [figures["speedup"], figures["psnr"]])
                append_line(out_dir / TRIALS, json.dumps(row))
                log.append(row)
                new += 1
                bar.update(1)
                if repeats >= MAX_REPEATS:  # the sampler keeps proposing what it has measured
                    break
                if clock() - timed > 60.0 * RETIME_MINUTES and clock() < deadline:  # the machine drifts
                    baseline.drift(_time_first(pipe, plan, callback, facts=facts))
                    timed = clock()
    finally:
        bar.close()
        remove(pipe)
    tuning_seconds = clock() - start
    front = pareto_front(log, plan)
    holdout, winner = _measure_holdout(pipe, plan, front, out_dir, progress, model, callback, facts)
    write_plot(out_dir / f"pareto-{_budget_name(plan)}.png", log, front, plan)
    return TuneResult(log, front, holdout, winner, tuning_seconds)


def _measure_holdout(
    pipe, plan: TunePlan, front: list[dict], out_dir: Path, progress: bool, model, callback, facts=None
):
    """The front on the held-out prompts with `genaccel bench` (paired, interleaved); the winner."""
    from genaccel.tools.bench import BenchPlan, run_bench
    from genaccel.tools.bench.report import summarize

    if not front:
        return [], None
    specs = [r["spec"] for r in front[:FRONT_MAX]]
    bench = BenchPlan(
        accels=specs,
        prompts=plan.holdout,
        seeds=plan.seeds,
        scorer=plan.scorer,
        memory="off",
        request=dataclasses.replace(plan.request, prompt="", seed=0, accel=None),
    )
    # a new front gets its own sweep
    digest = hashlib.sha1("\n".join(specs).encode(), usedforsecurity=False).hexdigest()[:8]
    folder = out_dir / f"holdout-{_budget_name(plan)}-{digest}"
    rows = run_bench(pipe, bench, folder, progress=progress, model=model, callback=callback, facts=facts)
    summary = summarize(rows, bench)
    kept = [
        r
        for r in summary[1:]
        if plan.keeps(r["psnr"], None if r["adherence_delta_points"] is None else -r["adherence_delta_points"])
    ]
    winner = max(kept, key=lambda r: r["speedup"] or 0.0) if kept else None
    return summary, winner


def _budget_name(plan: TunePlan) -> str:
    drop = "" if plan.max_adherence_drop is None else f"-adh{plan.max_adherence_drop:g}"
    return f"psnr{plan.min_psnr:g}{drop}"


def write_plot(path: Path, trials: list[dict], front: list[dict], plan: TunePlan) -> None:
    """Speedup against PSNR of every finished trial, the front marked, the budget drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if not t["pruned"]]
    cap = max(60.0, plan.min_psnr + 20)  # near-identical videos (up to 100 dB) drawn at the right edge

    def x(rows):
        return [min(r["psnr"], cap) for r in rows]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x(done), [t["speedup"] for t in done], s=12, c="#999", label=f"trials ({len(done)} finished)")
    ax.plot(x(front), [r["speedup"] for r in front], "o-", c="#c33", label="front in budget")
    ax.axvline(plan.min_psnr, ls="--", c="#333", lw=1, label=f"{plan.min_psnr:g} dB")
    ax.set_xlabel(f"PSNR dB (tuning prompts; {cap:g} = {cap:g} or more)")
    ax.set_ylabel("speedup")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ----------------------------------------------------------------------------- presets
def save_preset(profile_path: Path, name: str, setting: str, spec: str, figures: dict[str, Any], base: dict) -> Path:
    """Store `spec` as preset `name` of `setting` in the profile at `profile_path` (other entries kept)."""
    from genaccel.models.profiles import save_profile

    profile = dict(base)
    presets = {k: dict(v) for k, v in profile.get("presets", {}).items()}
    presets.setdefault(setting, {})[name] = {"spec": spec, **figures}
    profile["presets"] = presets
    return save_profile(profile, profile_path)
