"""Schedule: compute the steps of a fixed list, chosen offline per model and budget (LeMiCa).

Unlike TeaCache or MagCache, nothing is decided while generating: `genaccel calibrate --schedule`
measures how much reusing a computed step's residual over each span of later steps changes the final
output, and solves for every budget the lexicographic minimax path through the steps
(genaccel/schedules.py). At inference the pass's blocks run on the listed steps; on the others the
residual of the last computed pass is added to the pass's input (the same reuse as TeaCache's, through
the shared pass-skip hooks). Each CFG branch keeps its own residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genaccel.accelerators.base import SLOT_PASS, Accelerator, AcceleratorConfig, param
from genaccel.accelerators.pass_skip import PassSkipState, apply_pass_skip
from genaccel.schedules import budget_key, schedule_key

HEAD_HOOK = "genaccel_schedule_head"


@dataclass
class ScheduleConfig(AcceleratorConfig):
    budget: int = param(10, "computed steps per CFG branch, from this model's calibrated schedules "
                            "(`genaccel calibrate --schedule`)")
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
    def state_bytes(cls, config, shape) -> int:
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
        return {"passes_computed": self.computed, "passes_skipped": self.skipped,
                "computed_steps": sorted(self.computed_steps)}
