"""First-block cache: diffusers' FirstBlockCache behind genaccel's interface.

Block 0 always runs; when its residual changed less than `threshold` (relative mean absolute
difference) since the last computed pass, the remaining blocks are skipped and their cached
residual is added.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import FirstBlockCacheConfig as DiffusersFirstBlockCacheConfig
from diffusers.hooks import apply_first_block_cache

from genaccel.accelerators.base import SLOT_PASS, Accelerator, AcceleratorConfig, param


@dataclass
class FirstBlockCacheConfig(AcceleratorConfig):
    threshold: float = param(
        0.05, "skip the remaining blocks while block 0's residual changes less than this (0: skip nothing)"
    )

    def validate(self):
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")


class FirstBlockCache(Accelerator):
    name = "fbcache"
    summary = "run block 0, skip the rest while its residual barely changes (diffusers FirstBlockCache)"
    config_class = FirstBlockCacheConfig
    slots = frozenset({SLOT_PASS})
    context_parallel_reason = (
        "diffusers' FirstBlockCache decides from each process's shard of the sequence: the processes "
        "would skip different passes"
    )

    @classmethod
    def unsupported_reason(cls, family):
        if family.block_order != "sequential":
            first, last = family.block_lists[0], family.block_lists[-1]
            return (
                f"diffusers' FirstBlockCache takes its tail from {family.title}'s {last}, "
                f"which alternate with {first} in another token layout"
            )
        return None

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """Block 0's last residual and the last full residual of each CFG branch."""
        return 2 * shape.branches * shape.hidden_bytes

    def apply(self, denoiser):
        # diffusers skips when the change is <= threshold; -1 makes "0: skip nothing" exact.
        threshold = self.config.threshold if self.config.threshold > 0 else -1.0
        apply_first_block_cache(denoiser, DiffusersFirstBlockCacheConfig(threshold=threshold))
