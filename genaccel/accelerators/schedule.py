"""Schedule: compute the steps of a fixed list, chosen offline per model and budget (LeMiCa).

Unlike TeaCache or MagCache, nothing is decided while generating: `genaccel calibrate --schedule`
measures how much reusing a computed step's residual over each span of later steps changes the final
output, and solves for every budget the lexicographic minimax path through the steps
(the solver below). At inference the pass's blocks run on the listed steps; on the others the
residual of the last computed pass is added to the pass's input (the same reuse as TeaCache's, through
the shared pass-skip hooks). Each CFG branch keeps its own residual.

The solver (`minimax_path`, `all_budgets`):

Steps are the nodes of a graph; an edge (i, j) means "compute step i, reuse its residual for steps
i+1 .. j-1, compute step j". Its weight is the error that this one span of reuse causes in the final
output, measured by `genaccel calibrate --schedule`. A schedule with a budget of B computed steps is a
path from the first step to the last through B nodes. Errors do not add up simply along a path, so the
path is chosen by lexicographic minimax: the smallest largest edge error, then the smallest second
largest, and so on (the errors of a path sorted in descending order, compared lexicographically).

The order is kept by extension: if path P beats path Q (same length) to a node, P + e beats Q + e for
any edge e, so a dynamic programme over (node, computed steps so far) finds the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from genaccel.accelerators.base import SLOT_PASS, Accelerator, AcceleratorConfig, param
from genaccel.accelerators.pass_skip import PassSkipState, apply_pass_skip

HEAD_HOOK = "genaccel_schedule_head"


# --------------------------------------------------------------------- the solver
def _key(errors: tuple[float, ...]) -> tuple[float, ...]:
    """Comparison key of a path's errors: largest first (lexicographic minimax)."""
    return tuple(sorted(errors, reverse=True))


def minimax_path(steps: int, budget: int, errors: Mapping[tuple[int, int], float]) -> list[int]:
    """The computed steps (0 and steps-1 included, ascending) of the lexicographic minimax path with
    `budget` nodes over edges `errors[(i, j)]` (i < j). Consecutive steps (j = i + 1) cost 0 when absent.

    Raises ValueError when no path of that length exists (too few edges for the budget)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if not 1 <= budget <= steps or (steps > 1 and budget < 2):
        raise ValueError(f"budget {budget}: must be within {min(2, steps)}..{steps} for {steps} steps")
    if steps == 1:
        return [0]
    weight = {(i, i + 1): 0.0 for i in range(steps - 1)}
    weight.update({(i, j): float(e) for (i, j), e in errors.items() if 0 <= i < j < steps})
    incoming: dict[int, list[tuple[int, float]]] = {}
    for (i, j), e in weight.items():
        incoming.setdefault(j, []).append((i, e))
    # best[(node, count)] = (sorted errors, previous node): the best path from 0 to node through count nodes
    best: dict[tuple[int, int], tuple[tuple[float, ...], int]] = {(0, 1): ((), -1)}
    for node in range(1, steps):
        for count in range(2, budget + 1):
            options = []
            for prev, e in incoming.get(node, ()):
                if (prev, count - 1) in best:
                    options.append((_key(best[(prev, count - 1)][0] + (e,)), prev))
            if options:
                best[(node, count)] = min(options)
    end = (steps - 1, budget)
    if end not in best:
        raise ValueError(
            f"no schedule of {budget} computed steps over {steps} steps with the measured spans "
            f"(the longest measured span needs at least {_fewest(steps, weight)} computed steps)"
        )
    path, (node, count) = [], end
    while node >= 0:
        path.append(node)
        node, count = best[(node, count)][1], count - 1
    return path[::-1]


def path_errors(path: list[int], errors: Mapping[tuple[int, int], float]) -> list[float]:
    """The edge errors along `path`, largest first (0 for consecutive steps)."""
    return list(_key(tuple(errors.get((i, j), 0.0) if j > i + 1 else 0.0 for i, j in zip(path, path[1:]))))


def _fewest(steps: int, weight: Mapping[tuple[int, int], float]) -> int:
    """The fewest nodes of any path from 0 to steps-1 over `weight`'s edges."""
    fewest = {0: 1}
    for j in range(1, steps):
        options = [fewest[i] + 1 for (i, k) in weight if k == j and i in fewest]
        if options:
            fewest[j] = min(options)
    return fewest.get(steps - 1, steps)


def all_budgets(steps: int, errors: Mapping[tuple[int, int], float]) -> dict[int, list[int]]:
    """The minimax schedule of every feasible budget, from the fewest computed steps to all of them."""
    weight = {(i, i + 1): 0.0 for i in range(steps - 1)}
    weight.update(errors)
    return {b: minimax_path(steps, b, errors) for b in range(max(_fewest(steps, weight), min(2, steps)), steps + 1)}


def skip_spans(steps: int, max_span: int, first: int = 0) -> list[tuple[int, int]]:
    """The edges to measure: every (i, j) with 2 <= j - i <= max_span, i >= first (the spans that skip)."""
    return [(i, j) for i in range(first, steps) for j in range(i + 2, min(i + max_span, steps - 1) + 1)]


def schedule_key(steps: int) -> str:
    """The profile table holding the schedules of a `steps`-step sampler (`[schedule.SETTING.steps30]`)."""
    return f"steps{steps}"


def budget_key(budget: int) -> str:
    """The key of one budget's step list within a schedule table (`computed10 = [...]`)."""
    return f"computed{budget}"


# --------------------------------------------------------------------- the accelerator


@dataclass
class ScheduleConfig(AcceleratorConfig):
    budget: int = param(
        10, "computed steps per CFG branch, from this model's calibrated schedules (`genaccel calibrate --schedule`)"
    )
    steps: str = param("", "explicit computed steps instead, e.g. [0;1;3;6;29] (step 0 is always computed)")

    def validate(self):
        if self.budget < 1:
            raise ValueError("budget must be >= 1")
        parse_steps(self.steps)


def parse_steps(value: str) -> tuple[int, ...] | None:
    """`[0;1;3]` -> (0, 1, 3); "" -> None (use the calibrated schedule)."""
    text = value.strip().strip("[]").replace(";", " ").replace(",", " ")
    if not text.strip():
        return None
    try:
        steps = tuple(sorted({int(s) for s in text.split()}))
    except ValueError:
        raise ValueError(f"steps must be whole numbers like [0;1;3;6;29]; got '{value}'") from None
    if steps[0] < 0:
        raise ValueError("steps must be >= 0")
    return steps


def schedule_tables(profile: dict, setting: str = "default") -> dict[str, dict]:
    """The calibrated schedules a run of `setting` follows, {"stepsN": table}: those calibrated at that
    setting, else the default setting's (the profile's `[schedule.SETTING.stepsN]` tables)."""
    section = profile.get("schedule", {})
    return section.get(setting) or section.get("default") or {}


def calibrated_steps(profile: dict, num_steps: int, budget: int, setting: str = "default") -> tuple[int, ...]:
    """The calibrated schedule of `budget` computed steps for a `num_steps`-step run of `setting`;
    ValueError naming what is calibrated when there is none.

    A step count without its own schedules takes those of the nearest calibrated count, stretched: each
    computed step moves to the same fraction of the run (step 0 and the last stay), so fewer steps may
    compute fewer passes where two land on one step."""
    tables = schedule_tables(profile, setting)
    counts = sorted(int(k.removeprefix("steps")) for k in tables if k.startswith("steps") and k[5:].isdigit())
    if not counts:
        raise ValueError("needs computed-step schedules for this model: run `genaccel calibrate --schedule` on it")
    source = min(counts, key=lambda n: (abs(n - num_steps), n))
    table = tables[schedule_key(source)]
    steps = table.get(budget_key(budget))
    if steps is None:
        budgets = sorted(int(k.removeprefix("computed")) for k in table if k.startswith("computed"))
        known = f"{budgets[0]}..{budgets[-1]}" if budgets else "none"
        raise ValueError(f"budget {budget}: the calibrated {source}-step schedules have budgets {known}")
    if source == num_steps:
        return tuple(int(s) for s in steps)
    scale = (num_steps - 1) / max(source - 1, 1)
    return tuple(sorted({min(num_steps - 1, round(int(s) * scale)) for s in steps}))


class Schedule(Accelerator):
    name = "schedule"
    summary = "compute a fixed list of steps chosen offline as a minimax path over the steps (LeMiCa)"
    config_class = ScheduleConfig
    slots = frozenset({SLOT_PASS})
    honours_full_pass = True  # a stream's commit pass is always computed (it fills the KV cache)

    def __init__(self, config: ScheduleConfig, family, runtime):
        super().__init__(config, family, runtime)
        self.explicit = parse_steps(config.steps)
        if self.explicit is None and not any(runtime.profile.get("schedule", {}).values()):
            raise ValueError("needs computed-step schedules for this model: run `genaccel calibrate --schedule` on it")
        self.computed_steps: frozenset[int] = frozenset(self.explicit or ())
        self._run: tuple | None = None  # the (step count, setting) `computed_steps` was looked up for
        self.computed = 0
        self.skipped = 0

    @classmethod
    def check_request(cls, config: ScheduleConfig, request, profile: dict) -> None:
        """Raise ValueError when the request's run has no schedule for this budget."""
        if request.num_inference_steps and not parse_steps(config.steps):
            calibrated_steps(profile, request.num_inference_steps, config.budget, request.setting)

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """The last residual and pass input of each CFG branch."""
        return 2 * shape.branches * shape.hidden_bytes

    @torch.compiler.disable
    def decide(self, state: PassSkipState, block=None, hidden=None, temb=None) -> bool:
        """The pass-skip hooks' question: is this step on the list (or the branch's first pass)?"""
        rt = self.runtime
        run = (rt.num_steps, rt.setting)  # known once the run is
        if self.explicit is None and self._run != run:
            self.computed_steps = frozenset(calibrated_steps(rt.profile, rt.num_steps, self.config.budget, rt.setting))
            self._run = run
        compute = state.residual is None or rt.full_pass or rt.step_index in self.computed_steps
        self.computed += compute
        self.skipped += not compute
        return compute

    def apply(self, denoiser):
        apply_pass_skip(self.family.pass_blocks(denoiser), self.decide, HEAD_HOOK)

    def reset(self):
        self.computed = self.skipped = 0

    def stats(self):
        return {
            "passes_computed": self.computed,
            "passes_skipped": self.skipped,
            "computed_steps": sorted(self.computed_steps),
        }
