"""MagCache: diffusers' MagCache, fed with magnitude ratios from this model's calibrated profile.

The ratio of successive steps' residual magnitudes is nearly constant for most of a generation;
MagCache skips passes while the accumulated deviation from 1 stays under the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import MagCacheConfig as DiffusersMagCacheConfig
from diffusers.hooks import apply_mag_cache
from diffusers.hooks.mag_cache import nearest_interp

from genaccel.accelerators.base import SLOT_PASS, Accelerator, AcceleratorConfig, param


@dataclass
class MagCacheConfig(AcceleratorConfig):
    threshold: float = param(0.06, "skip while the accumulated magnitude error stays under this (0: skip nothing)")
    max_skip: int = param(2, "most consecutive steps skipped")
    retention: float = param(0.2, "fraction of initial steps always computed")

    def validate(self):
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")
        if self.max_skip < 0:
            raise ValueError("max_skip must be >= 0")
        if not 0 <= self.retention <= 1:
            raise ValueError("retention must be within 0..1")


class MagCache(Accelerator):
    name = "magcache"
    summary = "skip passes while residual magnitudes follow their calibrated ratios (diffusers MagCache)"
    config_class = MagCacheConfig
    slots = frozenset({SLOT_PASS})

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        ratios = runtime.profile.get("magcache", {}).get("ratios")
        if not ratios:
            raise ValueError("needs magnitude ratios for this model: run `genaccel calibrate` on it first")
        self.ratios = torch.tensor([float(r) for r in ratios])
        self._configs: list[DiffusersMagCacheConfig] = []

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """The last residual of each CFG branch."""
        return shape.branches * shape.hidden_bytes

    def apply(self, denoiser):
        config = DiffusersMagCacheConfig(
            threshold=self.config.threshold if self.config.threshold > 0 else -1.0,
            max_skip_steps=self.config.max_skip,
            retention_ratio=self.config.retention,
            num_inference_steps=len(self.ratios),
            mag_ratios=self.ratios.clone(),
        )
        apply_mag_cache(denoiser, config)
        self._configs.append(config)

    def on_generation_start(self):
        # The hooks read their config at run time: match the ratios to this run's step count.
        steps = self.runtime.num_steps
        for config in self._configs:
            if steps and config.num_inference_steps != steps:
                config.num_inference_steps = steps
                config.mag_ratios = nearest_interp(self.ratios, steps)
