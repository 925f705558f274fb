"""TeaCache: skip whole transformer passes while the timestep-modulated input barely changes.

Each step, the relative L1 change of an indicator (block 0's timestep-modulated input, or the
timestep embedding for families without one) is rescaled by a per-model polynomial and added to an
accumulator. Below the threshold, every block in the pass is skipped and the residual cached at the
last computed pass is added instead; otherwise the blocks run, the residual is refreshed and the
accumulator restarts. First and last steps are always computed; each CFG branch keeps its own state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genaccel.accelerators.base import SLOT_PASS, Accelerator, AcceleratorConfig, param
from genaccel.accelerators.pass_skip import PassSkipState, apply_pass_skip
from genaccel.accelerators.runtime import Runtime

HEAD_HOOK = "genaccel_teacache_head"
IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0)


# ------------------------------------------------------------------------ math
def relative_l1(current: torch.Tensor, previous: torch.Tensor, runtime: Runtime | None = None) -> float:
    """mean|current - previous| / mean|previous|, over every process's shard when the sequence is split
    (`Runtime.sum_over_shards`: the same value, so the same decision, on every process)."""
    previous = previous.float()
    sums = torch.stack([(current.float() - previous).abs().sum(), previous.abs().sum()])
    if runtime is not None:
        sums = runtime.sum_over_shards(sums)
    return float(sums[0] / sums[1].clamp_min(1e-12))


def rescale(distance: float, coefficients: tuple[float, ...]) -> float:
    """Evaluate the rescale polynomial (coefficients highest degree first) at `distance`."""
    value = 0.0
    for c in coefficients:
        value = value * distance + c
    return value


# ------------------------------------------------------------------------ config
@dataclass
class TeaCacheConfig(AcceleratorConfig):
    threshold: float = param(0.1, "skip passes until the accumulated rescaled change reaches this (0: skip nothing)")
    coefficients: str = param(
        "auto",
        "rescale polynomial: auto (this model's calibrated profile, else the family's published fit), "
        "a checkpoint key (see `genaccel list`), identity, or numbers [c4;c3;c2;c1;c0]",
    )
    warmup: int = param(-1, "steps of each CFG branch always computed at the start (-1: family default)")

    def validate(self):
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")


class TeaCacheState(PassSkipState):
    """The pass-skip residual plus the last indicator and the accumulated change."""

    def reset(self):
        super().reset()
        self.previous_indicator: torch.Tensor | None = None
        self.accumulated = 0.0


# ------------------------------------------------------------------------ accelerator
class TeaCache(Accelerator):
    name = "teacache"
    summary = "skip transformer passes while the timestep-modulated input changes little (TeaCache)"
    config_class = TeaCacheConfig
    slots = frozenset({SLOT_PASS})
    honours_full_pass = True  # a stream's commit pass is always computed (it fills the KV cache)

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """The last residual and modulated input of each CFG branch."""
        return 2 * shape.branches * shape.hidden_bytes

    def __init__(self, config: TeaCacheConfig, family, runtime, coefficients: tuple[float, ...] | None = None):
        super().__init__(config, family, runtime)
        self.coefficients = coefficients or resolve_coefficients(config.coefficients, family, runtime.profile)
        self.warmup = config.warmup if config.warmup >= 0 else family.teacache_warmup_steps
        self.computed = 0
        self.skipped = 0

    def decide_pass(self, state: TeaCacheState, block, hidden: torch.Tensor, temb: torch.Tensor) -> bool:
        """The pass-skip hooks' question: compute this pass? (from block 0's indicator)"""
        return self.decide(state, self.family.teacache_indicator(block, hidden, temb))

    @torch.compiler.disable
    def decide(self, state: TeaCacheState, indicator: torch.Tensor) -> bool:
        rt = self.runtime
        must_compute = (
            state.previous_indicator is None
            or state.residual is None
            or rt.step_index < max(self.warmup, 1)
            or rt.is_last_step
            or rt.full_pass
            or self.config.threshold <= 0
        )
        if not must_compute:
            state.accumulated += rescale(relative_l1(indicator, state.previous_indicator, rt), self.coefficients)
            must_compute = state.accumulated >= self.config.threshold
        if must_compute:
            state.accumulated = 0.0
        state.previous_indicator = indicator.detach()
        self.computed += must_compute
        self.skipped += not must_compute
        return must_compute

    def apply(self, denoiser):
        apply_pass_skip(
            self.family.pass_blocks(denoiser),
            self.decide_pass,
            HEAD_HOOK,
            state_class=TeaCacheState,
            temb_arg=self.family.temb_arg,
        )

    def reset(self):
        self.computed = self.skipped = 0

    def stats(self):
        return {
            "passes_computed": self.computed,
            "passes_skipped": self.skipped,
            "coefficients": list(self.coefficients),
        }


def resolve_coefficients(value: str, family, profile: dict | None = None) -> tuple[float, ...]:
    """Turn the `coefficients` parameter into numbers (see TeaCacheConfig)."""
    value = value.strip()
    if value in ("", "auto"):
        calibrated = (profile or {}).get("teacache", {}).get("coefficients")
        if calibrated:
            return tuple(float(c) for c in calibrated)
        return family.teacache_coefficients.get(family.teacache_default, IDENTITY)
    if value == "identity":
        return IDENTITY
    if value in family.teacache_coefficients:
        return family.teacache_coefficients[value]
    try:
        numbers = tuple(float(x) for x in value.strip("[]").replace(";", " ").split())
    except ValueError:
        numbers = ()
    if not numbers:
        known = ", ".join(["auto", "identity", *family.teacache_coefficients])
        raise ValueError(
            f"unknown coefficients '{value}' for {family.title} (known: {known}, or numbers [c4;c3;...;c0])"
        )
    return numbers
