"""FasterCache: diffusers' FasterCache (attention reuse plus its CFG cache) behind genaccel's interface.

Attention outputs are reused every other step with a linear extrapolation, and, inside a late
timestep window, the unconditional half of a batched-CFG forward is approximated from the
conditional half with frequency-domain weights instead of being computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import FasterCacheConfig as DiffusersFasterCacheConfig
from diffusers.hooks import apply_faster_cache

from genaccel.accelerators.base import SLOT_ATTENTION_OUTPUT, SLOT_CFG, Accelerator, AcceleratorConfig, param

TENSOR_FORMATS = ("BCFHW", "BFCHW", "BCHW")  # the latent layouts diffusers' FasterCache handles


@dataclass
class FasterCacheConfig(AcceleratorConfig):
    spatial: int = param(2, "compute attention every N steps inside the window (1: every step)")
    window: tuple[int, int] = param((-1, 681), "timestep window for attention reuse, low:high")
    cfg: int = param(5, "compute the unconditional branch every N steps inside cfg_window (1: every step)")
    cfg_window: tuple[int, int] = param((-1, 641), "timestep window for the CFG cache, low:high")

    def validate(self):
        if self.spatial < 1 or self.cfg < 1:
            raise ValueError("spatial and cfg must be >= 1")


class FasterCache(Accelerator):
    name = "fastercache"
    summary = "reuse attention outputs and approximate the unconditional CFG branch (diffusers FasterCache)"
    config_class = FasterCacheConfig
    slots = frozenset({SLOT_ATTENTION_OUTPUT, SLOT_CFG})

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """Two outputs of every self-attention layer per CFG branch, and the unconditional prediction's
        frequency parts."""
        return 2 * shape.branches * shape.self_attention_layers * shape.hidden_bytes + 2 * shape.latent_bytes

    @classmethod
    def unsupported_reason(cls, family):
        if family.cfg != "batched":
            return f"diffusers' FasterCache needs batched CFG; {family.title} runs cond and uncond as separate passes"
        if family.tensor_format not in TENSOR_FORMATS:
            return (
                f"diffusers' FasterCache does not handle {family.title}'s latent layout "
                f"({family.tensor_format}; it handles {', '.join(TENSOR_FORMATS)})"
            )
        return None

    def apply(self, denoiser):
        c = self.config
        never = (-2, -1)  # a window no timestep falls in
        apply_faster_cache(
            denoiser,
            DiffusersFasterCacheConfig(
                spatial_attention_block_skip_range=c.spatial,
                spatial_attention_timestep_skip_range=c.window if c.spatial > 1 else never,
                unconditional_batch_skip_range=c.cfg,
                unconditional_batch_timestep_skip_range=c.cfg_window if c.cfg > 1 else never,
                current_timestep_callback=lambda: self.runtime.timestep,
                attention_weight_callback=lambda _: 0.5,
                tensor_format=self.family.tensor_format,
            ),
        )
