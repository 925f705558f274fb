"""Per-pipeline run state: which step and CFG branch the denoiser is in, and call counters.

`Runtime` is the explicit state object every accelerator of one pipeline shares (in the style of
accelerate's state objects). A `StepTrackerHook`, outermost on each denoiser, fills it on every
transformer call.

Generation and chunk boundaries are declared by the caller: `genaccel.generation.generate` (and a streaming
generator) opens `Acceleration.generation()`, and calls `Acceleration.begin_chunk()` between chunks.
Per-generation state is set up at the generation's first denoiser call, once the pipeline has set
its timesteps (accelerators that follow the step count need it); chunks keep it. Only for a
pipeline called directly, outside such a declaration, does the tracker infer a new generation from
the scheduler building new timesteps, so nothing leaks between prompts then either.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager, _set_cache_context

TRACKER_HOOK = "genaccel_step_tracker"
COUNT_INNER_HOOK = "genaccel_count_inner"
COUNT_OUTER_HOOK = "genaccel_count_outer"
# Pipelines that batch CFG into one forward (CogVideoX, LTX, Mochi, Latte) run one branch.
BATCHED_BRANCH = "cond_uncond"


@dataclass
class Runtime:
    """Where the current generation is, as seen by the denoisers."""

    scheduler: object | None = None
    branch: str = BATCHED_BRANCH
    step_index: int = 0  # index of the current step within the current CFG branch
    timestep: float = 1000.0
    generation: int = 0  # number of generations started so far
    chunk_index: int = 0  # chunk of the current generation (streaming); 0 for a one-shot generation
    declared: bool = False  # inside a caller-declared generation: no inference from the timesteps
    # The current denoiser calls must run in full (a stream's commit pass, which fills the KV cache):
    # accelerators that honour it (`Accelerator.honours_full_pass`) skip nothing then.
    full_pass: bool = False
    # The denoiser's sequence is split across processes (context parallelism): a decision taken from
    # activations must be taken from sums over every process's shard (`sum_over_shards`), so that all
    # processes take the same one.
    sharded: bool = False
    started: bool = False  # the current generation's first denoiser call has happened
    profile: dict = field(default_factory=dict)  # this model's calibrated profile, if any
    setting: str = "default"  # the request's setting (its calibrated schedules may differ per setting)
    first_call_start: float = 0.0  # perf_counter at the first denoiser call of this generation
    last_call_end: float = 0.0  # perf_counter when the latest denoiser call returned
    branch_steps: dict[str, int] = field(default_factory=dict)
    counters: "CounterSet" = field(default_factory=lambda: CounterSet())
    _timesteps_seen: object = None

    def sum_over_shards(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over the processes sharing the sequence (itself when it is not split)."""
        if self.sharded:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values

    @property
    def num_steps(self) -> int:
        timesteps = getattr(self.scheduler, "timesteps", None)
        return len(timesteps) if timesteps is not None else 0

    @property
    def is_last_step(self) -> bool:
        return self.num_steps > 0 and self.step_index >= self.num_steps - 1

    def begin_generation(self, setting: str = "default") -> None:
        """A caller declares that a generation of `setting` starts (state was reset by the Acceleration)."""
        self.reset()
        self.setting = setting
        self.generation += 1
        self.declared = True

    def begin_chunk(self) -> int:
        """A caller declares the next chunk of the declared generation; step indices restart."""
        if not self.declared:
            raise RuntimeError("begin_chunk() needs a declared generation (Acceleration.generation())")
        self.chunk_index += 1
        self.branch_steps.clear()
        self.step_index = 0
        return self.chunk_index

    @contextmanager
    def full_passes(self):
        """Inside: every denoiser call is a full pass (see `full_pass`)."""
        self.full_pass = True
        try:
            yield self
        finally:
            self.full_pass = False

    def end_generation(self) -> None:
        self.declared = False
        # A later direct call that builds new timesteps is a new generation; one that does not is not.
        self._timesteps_seen = getattr(self.scheduler, "timesteps", None)

    def observe(self, branch: str, timestep: float) -> bool:
        """Record a denoiser call; return True if it is a generation's first call, where per-generation
        state is set up (the pipeline has set its timesteps by then, so the step count is known)."""
        if self.declared:
            first = not self.started
        else:
            timesteps = getattr(self.scheduler, "timesteps", None)
            # Schedulers build a fresh timesteps tensor in set_timesteps(), once per generation.
            first = timesteps is None or timesteps is not self._timesteps_seen
            if first:
                self.reset()
                self._timesteps_seen = timesteps
                self.generation += 1
        self.started = True
        if not self.first_call_start:
            self.first_call_start = time.perf_counter()
        self.branch = branch
        self.step_index = self.branch_steps.get(branch, 0)
        self.branch_steps[branch] = self.step_index + 1
        self.timestep = timestep
        return first

    def reset(self) -> None:
        self.first_call_start = self.last_call_end = 0.0
        self._timesteps_seen = None
        self.branch_steps.clear()
        self.step_index = 0
        self.chunk_index = 0
        self.started = False


def _timestep_value(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.flatten()[0]) if value.numel() else 0.0
    return float(value) if value is not None else 0.0


class _NoState(BaseState):
    def reset(self):
        pass


class StepTrackerHook(ModelHook):
    """Outermost hook on a denoiser: updates the Runtime, resets state on new generations,
    and supplies a cache context when the pipeline does not set one (e.g. Latte)."""

    # Stateful so that the pipeline's `cache_context(name)` reaches `self.contexts`.
    _is_stateful = True

    def __init__(self, runtime: Runtime, reset_all):
        super().__init__()
        self.runtime = runtime
        self.reset_all = reset_all  # callback resetting every stateful hook of the pipeline
        self.contexts = StateManager(_NoState)
        self._signature = None
        self._own_context = False

    def initialize_hook(self, module):
        self._signature = inspect.signature(module.forward)
        return module

    def reset_state(self, module):
        return module

    def pre_forward(self, module, *args, **kwargs):
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        context = self.contexts._context
        self._own_context = context is None
        context = context or CacheContext(BATCHED_BRANCH)
        if self.runtime.observe(context.name, _timestep_value(bound.get("timestep"))):
            self.reset_all()
            self._own_context = True  # the reset cleared the pipeline's context: restore it
        if self._own_context:
            _set_cache_context(module, context)
        return args, kwargs

    def post_forward(self, module, output):
        self.runtime.last_call_end = time.perf_counter()
        if self._own_context:
            _set_cache_context(module, None)
            self._own_context = False
        return output


class CallCounterHook(ModelHook):
    """Counts calls that reach this point of a module's hook chain.

    Registered innermost, it counts calls that really computed; registered outermost, every call. Inside a
    graph the compile accelerator traces, it counts nothing (a traced count would be a guard, and each new
    value a recompilation): the compiled body that holds the module counts its calls instead, outside the
    graph (`compile_transparent`: genaccel/accelerators/compilation.py).
    """

    compile_transparent = True

    def __init__(self):
        super().__init__()
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        if not torch.compiler.is_compiling():
            self.calls += 1
        return args, kwargs


@dataclass
class CounterSet:
    """Counters of one pipeline: transformer passes and attention calls, computed and requested."""

    passes_total: list[CallCounterHook] = field(default_factory=list)
    passes_computed: list[CallCounterHook] = field(default_factory=list)
    attention_total: list[CallCounterHook] = field(default_factory=list)
    attention_computed: list[CallCounterHook] = field(default_factory=list)

    def computed_passes(self) -> int:
        """Transformer passes whose blocks really ran (compare before and after a call)."""
        return sum(c.calls for c in self.passes_computed)

    def snapshot(self) -> dict[str, int]:
        total = sum(c.calls for c in self.passes_total)
        computed = self.computed_passes()
        attn_total = sum(c.calls for c in self.attention_total)
        attn_computed = sum(c.calls for c in self.attention_computed)
        return {
            "transformer_calls": total,
            "computed_calls": computed,
            "skipped_calls": total - computed,
            "attention_calls": attn_total,
            "attention_reused": attn_total - attn_computed,
        }

    def reset(self) -> None:
        for hooks in (self.passes_total, self.passes_computed, self.attention_total, self.attention_computed):
            for hook in hooks:
                hook.calls = 0


def register_counter(module: torch.nn.Module, name: str) -> CallCounterHook:
    hook = CallCounterHook()
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    return hook
