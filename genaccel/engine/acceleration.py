"""Apply a spec to a pipeline and remove it again: the object that owns everything genaccel added.

Hooks go on in a fixed order on each denoiser: the hooks accelerators need innermost first
(`Accelerator.apply_inner`: compile's compiled bodies), then inner call counters (they see only calls that
really computed), then the accelerators in spec order, then the attention seam when an accelerator owns the
attention kernel (their kernels nested in `KERNEL_NESTING` order, installed by
`genaccel.attention.install_seam`), then outer counters and, when metering, the state meter (it sees every
call), then the hooks accelerators need around all the others (`Accelerator.apply_outer`, by `outer_rank`:
compile's graph boundaries last), and the step tracker outermost. Everything registered is recorded (`HookLedger`), so `remove()` restores the pipeline exactly, and several accelerators stack on
one pipeline.

The state meter is opt-in (`install(..., meter_state=True)`; the bench turns it on): after each denoiser
call it walks the hooks each accelerator's ledger recorded and measures the bytes their state holds
(`genaccel.accelerators.state.measured_state_bytes`); `stats()` then reports the peak of the generation
per accelerator as `state_bytes`. Without it `stats()` has no `state_bytes`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accelerators.base import KERNEL_NESTING, Accelerator, HookLedger, remove_ledgers
from genaccel.accelerators.runtime import (
    COUNT_INNER_HOOK,
    COUNT_OUTER_HOOK,
    TRACKER_HOOK,
    Runtime,
    StepTrackerHook,
    register_counter,
)
from genaccel.accelerators.state import measured_state_bytes
from genaccel.attention import BlockCausalKernel, dense_kernel, install_seam
from genaccel.attention.backends import DEFAULT as DEFAULT_BACKEND
from genaccel.attention.backends import DenseKernel, reset_backend, set_backend
from genaccel.errors import SpecError
from genaccel.memory.offload import unplaced
from genaccel.pipelines.families import FamilyAdapter, family_of

_ATTR = "_genaccel"


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec checked against one model (`genaccel.generation.spec.resolve_spec`): its canonical text and
    the (accelerator class, config) pairs, in spec order; and the attention backend the run uses (a request's
    `attention`, set by `genaccel.generation.prepare.complete`)."""

    text: str
    accelerators: tuple[tuple[type, object], ...]
    attention: str = DEFAULT_BACKEND


NO_SPEC = ResolvedSpec("none", ())
METER_HOOK = "genaccel_state_meter"


class StateMeterHook(ModelHook):
    """On a denoiser, around every accelerator's hooks, when the acceleration meters state: after each call,
    the acceleration measures the bytes its accelerators' hook states hold."""

    def __init__(self, acceleration: "Acceleration"):
        super().__init__()
        self.acceleration = acceleration

    def post_forward(self, module, output):
        self.acceleration._measure_state()
        return output


class Acceleration:
    """Accelerators applied to one pipeline, with their shared runtime state and counters. `meter_state`:
    measure the bytes the accelerators' hooks hold after every denoiser call (the bench's `state_bytes`)."""

    def __init__(self, pipe, family: FamilyAdapter, spec: ResolvedSpec, profile: dict, *, meter_state: bool = False):
        self.pipe = pipe
        self.family = family
        self.spec = spec.text
        self.resolved = spec
        self._backend_before: str | None = None  # the process-wide backend before this one set its own
        self.meter_state = meter_state
        self.runtime = Runtime(scheduler=pipe.scheduler, profile=profile)
        self.counters = self.runtime.counters
        self.accelerators: list[Accelerator] = []
        self._ledger = HookLedger()
        self._state_peaks: dict[str, int] = {}  # accelerator name -> peak bytes of its hook state this generation
        self._metered: list[Accelerator] = []  # when metering: the accelerators with hooks, whose state is measured
        self._denoisers = [module for _, module in family.denoiser_modules(pipe)]
        try:
            for cls, config in spec.accelerators:
                try:
                    self.accelerators.append(cls(config, family, self.runtime))
                except ValueError as exc:
                    raise SpecError(f"{cls.name} on {family.title}: {exc}") from None
            if self.attention != DEFAULT_BACKEND:  # before the seam saves each module's processor
                self._backend_before = set_backend(self._denoisers, self.attention)
            for accelerator in self.accelerators:
                try:
                    accelerator.apply_pipeline(pipe, self._denoisers)
                except ValueError as exc:
                    raise SpecError(f"{accelerator.name} on {family.title}: {exc}") from None
            for denoiser in self._denoisers:
                self._install(denoiser)
            if meter_state:
                self._metered = [a for a in self.accelerators if a.ledger.entries()]
        except Exception:
            self.remove()
            raise

    # ------------------------------------------------------------------ wiring
    def _install(self, denoiser) -> None:
        tail = self.family.block_at(denoiser, self.family.pass_tail)
        attention = [module for _, module in self.family.attention_layers(denoiser)]
        for accelerator in self.accelerators:
            if type(accelerator).apply_inner is not Accelerator.apply_inner:
                accelerator.install_inner(denoiser)
        with self._ledger.recording(denoiser):
            self.counters.passes_computed.append(register_counter(tail, COUNT_INNER_HOOK))
            self.counters.attention_computed.extend(register_counter(m, COUNT_INNER_HOOK) for m in attention)
        for accelerator in self.accelerators:
            accelerator.install(denoiser)
        self._install_attention_seam(denoiser)
        with self._ledger.recording(denoiser):
            self.counters.attention_total.extend(register_counter(m, COUNT_OUTER_HOOK) for m in attention)
            self.counters.passes_total.append(register_counter(denoiser, COUNT_OUTER_HOOK))
            if self.meter_state:
                HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(StateMeterHook(self), METER_HOOK)
        for accelerator in sorted(self.accelerators, key=lambda a: a.outer_rank):
            if type(accelerator).apply_outer is not Accelerator.apply_outer:
                accelerator.install_outer(denoiser, self.accelerators)
        with self._ledger.recording(denoiser):
            tracker = StepTrackerHook(self.runtime, self._start_generation)
            HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(tracker, TRACKER_HOOK)

    def _kernel_owners(self) -> list[Accelerator]:
        """The accelerators that own the attention kernel, innermost first (`KERNEL_NESTING` order)."""

        def depth(accelerator):
            return min(KERNEL_NESTING.index(slot) for slot in accelerator.slots if slot in KERNEL_NESTING)

        return sorted((a for a in self.accelerators if a.slots & set(KERNEL_NESTING)), key=depth)

    def _install_attention_seam(self, denoiser) -> None:
        """Route the denoiser's self-attention through the kernel owners' nested kernels, if any."""
        base = kernel = _base_kernel(self.pipe, self.attention)
        for accelerator in self._kernel_owners():
            kernel = accelerator.attention_kernel(kernel)
        if kernel is base and not isinstance(base, BlockCausalKernel):  # the module's own attention does it
            return
        with self._ledger.recording(denoiser):
            install_seam(denoiser, self.family, kernel, self.runtime)

    @torch.compiler.disable
    def _measure_state(self) -> None:
        """Raise each accelerator's peak of hook-state bytes to what its hooks hold now."""
        peaks = self._state_peaks
        for accelerator in self._metered:
            held = measured_state_bytes(accelerator)
            if held > peaks.get(accelerator.name, 0):
                peaks[accelerator.name] = held

    def _start_generation(self) -> None:
        self._state_peaks.clear()
        for denoiser in self._denoisers:
            HookRegistry.check_if_exists_or_initialize(denoiser).reset_stateful_hooks()
        for accelerator in self.accelerators:
            accelerator.on_generation_start()

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Forget all per-generation state and figures."""
        self._start_generation()
        self.runtime.reset()
        self.counters.reset()
        for accelerator in self.accelerators:
            accelerator.reset()

    @contextmanager
    def generation(self, setting: str = "default") -> Iterator["Acceleration"]:
        """Declare one generation: figures reset on entry, state set up at its first denoiser call
        (after the pipeline set its timesteps), and the timesteps rule (which spots a new generation
        when the pipeline is called directly) is off inside, so a caller that sets timesteps once
        per chunk keeps its state across chunks (see `begin_chunk`). `setting` is the request's (calibrated
        schedules are per setting)."""
        self.reset()
        self.runtime.begin_generation(setting)
        try:
            yield self
        finally:
            self.runtime.end_generation()

    def begin_chunk(self) -> int:
        """Declare the next chunk of the current generation (a streaming generator calls this before
        each chunk's denoising loop): step indices restart, accelerator state is kept. Returns the
        chunk index."""
        return self.runtime.begin_chunk()

    def stats(self) -> dict[str, Any]:
        """Figures since the last reset: passes computed/skipped, attention calls reused, per accelerator (when
        metering state, with `state_bytes`: the peak bytes its hooks kept in their state after a transformer
        call, measured; not metered, the figure is absent)."""
        figures = self.counters.snapshot()
        figures["accelerators"] = {}
        for a in self.accelerators:
            own = figures["accelerators"][a.name] = dict(a.stats())
            if self.meter_state:
                own["state_bytes"] = self._state_peaks.get(a.name, 0)
        return figures

    def remove(self) -> None:
        """Take every hook genaccel added off the pipeline, newest first, then undo what accelerators changed."""
        remove_ledgers([self._ledger, *(a.ledger for a in self.accelerators)])
        for accelerator in reversed(self.accelerators):
            accelerator.uninstall()
        if self._backend_before is not None:
            reset_backend(self._denoisers, self._backend_before)
            self._backend_before = None
        self.accelerators = []
        self._metered = []
        if getattr(self.pipe, _ATTR, None) is self:
            delattr(self.pipe, _ATTR)

    @property
    def attention(self) -> str:
        """The attention backend this acceleration set on the denoisers (`native`: the model's own)."""
        return self.resolved.attention

    def __repr__(self) -> str:
        backend = "" if self.attention == DEFAULT_BACKEND else f", attention={self.attention}"
        return f"Acceleration({self.family.name}: {self.spec}{backend})"


def _base_kernel(pipe, backend: str = DEFAULT_BACKEND):
    """The attention a model was trained with, under every accelerator's kernel: block-causal for a
    causal streaming model (its genaccel.toml's [stream] table), else dense (through `backend`)."""
    table = getattr(pipe, "_genaccel_stream", None) or {}
    if table.get("attention") == "block_causal":
        return BlockCausalKernel(int(table.get("chunk_frames", 1)))
    return dense_kernel if backend == DEFAULT_BACKEND else DenseKernel(backend)


def install(pipe, spec: ResolvedSpec, profile: dict, *, meter_state: bool = False) -> Acceleration:
    """Install a resolved spec's accelerators on a diffusers pipeline, replacing any genaccel installed.

    `profile` is the model's calibrated profile (`ModelFacts.profile`), read by the caller. The Python API's
    `genaccel.apply` resolves a spec string first (`genaccel.generation.prepare.apply`). `meter_state`: measure
    the bytes the accelerators' hooks hold (`state_bytes` in `stats()`), at the cost of a walk of their state
    after every denoiser call; the bench turns it on. Returns the `Acceleration`; `remove(pipe)` or
    `acceleration.remove()` restores the pipeline. `genaccel.generation.generate` keeps an acceleration
    installed here when its request's spec is the same.
    """
    family = family_of(pipe)
    with unplaced(pipe):  # offloading's hooks wrap genaccel's, never the reverse (see genaccel.memory.offload)
        remove(pipe)
        acceleration = Acceleration(pipe, family, spec, profile, meter_state=meter_state)
    setattr(pipe, _ATTR, acceleration)
    return acceleration


def remove(pipe) -> None:
    """Remove what genaccel applied to `pipe` (no-op if nothing is applied)."""
    acceleration = getattr(pipe, _ATTR, None)
    if acceleration is not None:
        with unplaced(pipe):
            acceleration.remove()


def acceleration_of(pipe) -> Acceleration | None:
    return getattr(pipe, _ATTR, None)
