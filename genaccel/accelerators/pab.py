"""Pyramid Attention Broadcast: diffusers' hook, with one state per CFG branch.

Inside a timestep window, an attention layer is computed every N-th step and its output is reused
in between; N is set separately for self (spatial), temporal and cross attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import PyramidAttentionBroadcastConfig as DiffusersPyramidAttentionBroadcastConfig
from diffusers.hooks import apply_pyramid_attention_broadcast
from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastHook, PyramidAttentionBroadcastState

from genaccel.accelerators.base import SLOT_ATTENTION_OUTPUT, Accelerator, AcceleratorConfig, PerBranchState, param


@dataclass
class PyramidAttentionBroadcastConfig(AcceleratorConfig):
    spatial: int = param(2, "compute self-attention every N steps inside the window (1: every step)")
    temporal: int = param(3, "compute temporal attention every N steps (families with temporal blocks)")
    cross: int = param(6, "compute cross-attention every N steps")
    window: tuple[int, int] = param((100, 800), "timestep window where outputs are reused, as low:high (0:0 = never)")

    def validate(self):
        for name in ("spatial", "temporal", "cross"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.window[0] > self.window[1]:
            raise ValueError("window must be low:high with low <= high")


class PyramidAttentionBroadcast(Accelerator):
    name = "pab"
    summary = "reuse attention outputs across steps in a timestep window (diffusers Pyramid Attention Broadcast)"
    config_class = PyramidAttentionBroadcastConfig
    slots = frozenset({SLOT_ATTENTION_OUTPUT})

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """One output of every attention layer per CFG branch."""
        return shape.branches * (shape.self_attention_layers + shape.cross_attention_layers) * shape.hidden_bytes

    def apply(self, denoiser):
        c = self.config
        apply_pyramid_attention_broadcast(
            denoiser,
            DiffusersPyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=c.spatial,
                temporal_attention_block_skip_range=c.temporal,
                cross_attention_block_skip_range=c.cross,
                spatial_attention_timestep_skip_range=c.window,
                temporal_attention_timestep_skip_range=c.window,
                cross_attention_timestep_skip_range=c.window,
                current_timestep_callback=lambda: self.runtime.timestep,
            ),
        )
        # diffusers keeps one state per layer; with separate cond/uncond forwards the uncond
        # pass would reuse the cond pass's attention. Give each CFG branch its own.
        for module in denoiser.modules():
            registry = getattr(module, "_diffusers_hook", None)
            for hook in registry.hooks.values() if registry else ():
                if isinstance(hook, PyramidAttentionBroadcastHook) and not isinstance(hook.state, PerBranchState):
                    hook.state = PerBranchState(PyramidAttentionBroadcastState, self.runtime)
