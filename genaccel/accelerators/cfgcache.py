"""CFG cache: skip the unconditional pass on most steps, for pipelines that run CFG as two passes.

With classifier-free guidance, each step runs the transformer twice: on the prompt (cond) and on
the negative prompt (uncond). Their difference changes slowly from step to step, so on a reused
step the unconditional output is taken as this step's conditional output plus the difference
measured at the last step where both ran: uncond_t ~ cond_t + (uncond_s - cond_s). This is the
idea behind FasterCache's CFG cache (which also splits the difference by frequency), written for
Wan and HunyuanVideo, whose pipelines call the branches one after the other in the cache
contexts "cond" and "uncond". Batched-CFG pipelines use `fastercache` instead.

Stacked with a pass cache (MagCache, TeaCache, ...), the difference is only ever measured, and the
unconditional pass only ever computed, on steps where both branches really ran their blocks. The
guided prediction is cond + (scale - 1) * (cond - uncond): an approximated cond paired with an
exact uncond (or the reverse) puts the approximation error into that difference, amplified by
scale - 1 (5x at guidance 6). So on steps where the pass cache skipped the conditional pass, the
unconditional output is cond + difference too, and a refresh that falls on such a step waits for
the next step where the conditional pass computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from genaccel.accelerators.base import SLOT_CFG, Accelerator, AcceleratorConfig, param
from genaccel.accelerators.fastercache import FasterCache

HOOK = "genaccel_cfg_cache"


# ------------------------------------------------------------------------ config
@dataclass
class CFGCacheConfig(AcceleratorConfig):
    interval: int = param(
        2, "compute the unconditional pass every N steps, reuse its difference in between (1: every step)"
    )
    warmup: int = param(3, "steps at the start where both passes always run")

    def validate(self):
        if self.interval < 1:
            raise ValueError("interval must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")


# ------------------------------------------------------------------------ math
def should_compute_uncond(step: int, num_steps: int, interval: int, warmup: int) -> bool:
    """True on warm-up steps, on the last step, and every `interval` steps after the warm-up."""
    if step < warmup or (num_steps and step >= num_steps - 1):
        return True
    return (step - warmup) % interval == 0


def _sample(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


# ------------------------------------------------------------------------ hook
class CFGCacheHook(ModelHook):
    """On the denoiser: remembers this step's cond output and the last uncond - cond difference
    measured where both passes really computed."""

    _is_stateful = True

    def __init__(self, accelerator: "CFGCache"):
        super().__init__()
        self.accel = accelerator
        self.reset_state(None)

    def reset_state(self, module):
        self.cond: torch.Tensor | None = None
        self.cond_exact = False  # whether this step's cond pass ran its blocks (no pass cache skipped it)
        self.delta: torch.Tensor | None = None
        self.refresh_due = False  # a scheduled refresh not yet done (its step's cond pass was skipped)
        return module

    def new_forward(self, module, *args, **kwargs):
        runtime = self.accel.runtime
        if runtime.branch not in ("cond", "uncond"):
            return self.fn_ref.original_forward(*args, **kwargs)
        before = runtime.counters.computed_passes()
        if runtime.branch == "cond":
            output = self.fn_ref.original_forward(*args, **kwargs)
            self.cond = _sample(output)
            self.cond_exact = runtime.counters.computed_passes() > before
            return output

        self.refresh_due |= self.accel.decide()
        if self.delta is not None and not (self.refresh_due and self.cond_exact):
            return self._reuse(kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        exact = runtime.counters.computed_passes() > before
        if self.delta is not None and not exact:
            return self._reuse(kwargs)  # a pass cache approximated this uncond pass: keep the pair coherent
        if self.cond is not None:
            self.delta = _sample(output) - self.cond
        self.refresh_due = False
        self.accel.computed += 1
        return output

    def _reuse(self, kwargs):
        self.accel.reused += 1
        sample = self.cond + self.delta
        return (sample,) if kwargs.get("return_dict", True) is False else Transformer2DModelOutput(sample=sample)


# ------------------------------------------------------------------------ accelerator
class CFGCache(Accelerator):
    name = "cfgcache"
    summary = "reuse the unconditional-minus-conditional difference; skip the uncond pass between refreshes"
    config_class = CFGCacheConfig
    slots = frozenset({SLOT_CFG})

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """The unconditional-minus-conditional difference of the prediction."""
        return shape.latent_bytes

    @classmethod
    def unsupported_reason(cls, family):
        if family.cfg == "separate":
            return None
        reason = f"{family.title} runs CFG as one batched pass (uncond and cond together)"
        return reason if FasterCache.unsupported_reason(family) else reason + ": use fastercache's CFG cache"

    def __init__(self, config: CFGCacheConfig, family, runtime):
        super().__init__(config, family, runtime)
        self.computed = 0
        self.reused = 0

    def decide(self) -> bool:
        """Whether the current unconditional pass runs, by the refresh schedule."""
        rt, c = self.runtime, self.config
        return should_compute_uncond(rt.step_index, rt.num_steps, c.interval, c.warmup)

    def apply(self, denoiser):
        HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(CFGCacheHook(self), HOOK)

    def reset(self):
        self.computed = self.reused = 0

    def stats(self):
        return {"uncond_computed": self.computed, "uncond_reused": self.reused}
