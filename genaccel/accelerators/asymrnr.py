"""AsymRnR: asymmetric token reduction at the attention call, queries and keys/values by different shares.

After the family's projections, norms and rotary embeddings, a share of the video queries and a separate
share of the video keys/values are merged into one destination per 3-D cell (keys and values together,
matched on values); attention runs on the reduced sets, merged keys weighted by how many tokens they stand
for, and each merged query's output is restored from its destination's. Matches are reused for a few steps.
The math is genaccel/tokens/matching.py, the kernel genaccel/tokens/reduce.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from genaccel.accelerators.base import SLOT_ATTENTION_KERNEL, SLOT_TOKENS, AcceleratorConfig, param
from genaccel.accelerators.kernel_owner import KernelOwner
from genaccel.tokens.reduce import AsymmetricReductionKernel
from genaccel.tokens.weights import ReductionSchedule, largest_share, validate_reduction


@dataclass
class AsymRnRConfig(AcceleratorConfig):
    q_ratio: float = param(0.3, "share of the video queries merged (their outputs restored from their match)")
    kv_ratio: float = param(0.3, "share of the video keys and values merged (matched on the values)")
    cell: tuple[int, int, int] = param((2, 2, 2), "destination cell as frames:rows:columns: one destination per cell")
    interval: int = param(4, "steps a match is reused before it is computed again")
    dense_steps: int = param(3, "first denoising steps without reduction")
    min_tokens: int = param(
        1024, "no reduction in calls with fewer video tokens (matching would cost more than it saves)"
    )
    schedule: str = param(
        "uniform",
        "uniform: the same ratios in every block and step; profile: moved to the blocks "
        "and steps whose tokens are most alike, from the model's calibrated profile (means kept)",
    )

    def validate(self):
        validate_reduction(self, ("q_ratio", "kv_ratio"))


class AsymRnR(KernelOwner):
    name = "asymrnr"
    summary = "token reduction: merge redundant video queries and keys/values at the attention call (AsymRnR)"
    config_class = AsymRnRConfig
    slots = frozenset({SLOT_TOKENS})
    # The sparse kernels lay their blocks out on the latent grid, which reduced token sets no longer fill.
    excludes = {SLOT_ATTENTION_KERNEL: "sparse attention needs the full token grid, which token reduction removes"}

    factorised_reason = "with no 3-D neighbourhood to merge over"

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        self.plan = ReductionSchedule.from_profile(runtime.profile) if config.schedule == "profile" else None

    def _scheduled(self, layer: int, step: int | None) -> tuple[float, float]:
        c = self.config
        most = largest_share(c.cell)
        steps = self.runtime.num_steps
        return (
            self.plan.ratio(c.q_ratio, most, layer, step, steps),
            self.plan.ratio(c.kv_ratio, most, layer, step, steps),
        )

    def make_kernel(self, inner):
        c = self.config
        return AsymmetricReductionKernel(
            inner,
            q_ratio=c.q_ratio,
            kv_ratio=c.kv_ratio,
            cell=c.cell,
            interval=c.interval,
            dense_steps=c.dense_steps,
            min_tokens=c.min_tokens,
            schedule=self._scheduled if self.plan is not None else None,
        )
