"""ToMe: merge redundant video tokens before each block's self-attention (and optionally its feed-forward),
restore them after.

A share of the video tokens is merged into one destination per small (t, h, w) cell before the module, so
its projections and attention (or the whole feed-forward) run on fewer tokens; merged tokens get their
destination's output back. Text tokens are never merged; rotary tables are gathered with the kept tokens,
so positions stay exact. Matches are reused for a few steps. The math is genaccel/tokens/matching.py, the
hooks genaccel/tokens/tome.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import HookRegistry

from genaccel.accelerators.base import (
    SLOT_ATTENTION_KERNEL,
    SLOT_ATTENTION_OUTPUT,
    SLOT_TOKENS,
    Accelerator,
    AcceleratorConfig,
    param,
)
from genaccel.accelerators.kernel_owner import seam_unsupported_reason
from genaccel.tokens.tome import MergeSchedule, MergeStats, token_merge_hooks
from genaccel.tokens.weights import ReductionSchedule, validate_reduction


@dataclass
class ToMeConfig(AcceleratorConfig):
    ratio: float = param(0.3, "share of the video tokens merged before each block's self-attention")
    ffn: bool = param(False, "merge before the feed-forward too")
    cell: tuple[int, int, int] = param((2, 2, 2), "destination cell as frames:rows:columns: one destination per cell")
    interval: int = param(4, "steps a match is reused before it is computed again")
    dense_steps: int = param(3, "first denoising steps without merging")
    min_tokens: int = param(
        1024, "no merging in calls with fewer video tokens (matching would cost more than it saves)"
    )
    local: bool = param(True, "merge a token only into its own cell's destination (false: the most similar anywhere)")
    schedule: str = param(
        "uniform",
        "uniform: the same ratio in every block and step; profile: moved to the blocks "
        "and steps whose tokens are most alike, from the model's calibrated profile (mean kept)",
    )

    def validate(self):
        validate_reduction(self, ("ratio",))


class ToMe(Accelerator):
    name = "tome"
    summary = "token merging: merge redundant video tokens before self-attention (and the feed-forward), restore after"
    config_class = ToMeConfig
    slots = frozenset({SLOT_TOKENS})
    excludes = {
        SLOT_ATTENTION_KERNEL: "sparse attention needs the full token grid, which token merging removes",
        SLOT_ATTENTION_OUTPUT: "reused attention outputs are kept at the full token count, which merging changes",
    }

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        self.merge_stats = MergeStats()
        c = config
        plan = ReductionSchedule.from_profile(runtime.profile) if c.schedule == "profile" else None
        self.schedule = MergeSchedule(
            ratio=c.ratio,
            cell=c.cell,
            interval=c.interval,
            dense_steps=c.dense_steps,
            min_tokens=c.min_tokens,
            local=c.local,
            plan=plan,
        )

    @classmethod
    def unsupported_reason(cls, family) -> str | None:
        return seam_unsupported_reason(family, "with no 3-D neighbourhood to merge over")

    def attention_kernel(self, inner):
        """Merging happens around the attention module, not in its kernel: the kernel is left as it is."""
        return inner

    def apply(self, denoiser):
        for module, name, hook in token_merge_hooks(
            denoiser, self.family, self.schedule, self.merge_stats, self.runtime, ffn=self.config.ffn
        ):
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)

    def reset(self) -> None:
        self.merge_stats.clear()

    def stats(self):
        return self.merge_stats.summary()
