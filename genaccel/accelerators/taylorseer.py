"""TaylorSeer: diffusers' TaylorSeer cache behind genaccel's interface.

Attention outputs are computed every `interval` steps and forecast in between by a Taylor series
over the step index, from finite differences of the last computed outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

from genaccel.accelerators.base import SLOT_ATTENTION_OUTPUT, SLOT_MODULE_OUTPUT, Accelerator, AcceleratorConfig, param


@dataclass
class TaylorSeerConfig(AcceleratorConfig):
    interval: int = param(3, "compute every N steps and forecast the steps between (1: compute every step)")
    warmup: int = param(3, "steps computed fully at the start to seed the forecast")
    order: int = param(1, "Taylor order of the forecast (1 or 2)")

    def validate(self):
        if self.interval < 1:
            raise ValueError("interval must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.order not in (1, 2):
            raise ValueError("order must be 1 or 2")


class TaylorSeer(Accelerator):
    name = "taylorseer"
    summary = "forecast attention outputs between computed steps with a Taylor series (diffusers TaylorSeer)"
    config_class = TaylorSeerConfig
    slots = frozenset({SLOT_MODULE_OUTPUT, SLOT_ATTENTION_OUTPUT})

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """The output and its `order` differences, for every attention layer of each CFG branch."""
        return (
            (config.order + 1)
            * shape.branches
            * (shape.self_attention_layers + shape.cross_attention_layers)
            * shape.hidden_bytes
        )

    def apply(self, denoiser):
        c = self.config
        config = TaylorSeerCacheConfig(
            cache_interval=c.interval,
            # interval 1 means "never forecast": keep the warm-up phase for the whole run.
            disable_cache_before_step=c.warmup if c.interval > 1 else 1 << 30,
            max_order=c.order,
            taylor_factors_dtype=torch.float32,
            # diffusers' default patterns miss names like "blocks.0.attn1": name the layers exactly.
            cache_identifiers=[re.escape(name) for name, _ in self.family.attention_layers(denoiser)],
        )
        apply_taylorseer_cache(denoiser, config)
