"""The accelerator interface and the pieces every accelerator shares.

An accelerator is one module with a config dataclass and an `Accelerator` subclass that installs
hooks on each denoiser. Hooks are recorded as they are registered (`HookLedger`, an accelerator's
`ledger`) so removal is exact, even for diffusers' built-in caches whose hook names are private; the ledger
also tells which hooks are an accelerator's (`entries()`, `hooks()`), for the state walk
(genaccel/accelerators/state.py) and LightCache.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accelerators.runtime import Runtime

# What an accelerator takes over. Two accelerators that claim the same slot cannot stack.
SLOT_PASS = "pass"  # skips whole transformer passes (TeaCache, FirstBlockCache, MagCache)
SLOT_ATTENTION_OUTPUT = "attention_output"  # reuses attention outputs across steps (PAB, FasterCache)
SLOT_CFG = "cfg"  # approximates a CFG branch (FasterCache)
SLOT_MODULE_OUTPUT = "module_output"  # predicts module outputs (TaylorSeer)
SLOT_ATTENTION_KERNEL = "attention_kernel"  # computes self-attention sparsely (svg, radial, sta, topk)
SLOT_TOKENS = "tokens"  # token merging and restoration (asymrnr, tome)
SLOT_KV_CACHE = "kv_cache"  # rolling key/value cache for streamed generation (kvcache)
SLOT_COMPILE = "compile"  # compiles the denoiser (compile)
SLOT_QUANT = "quant"  # quantizes weights and activations (quant)

# Accelerators holding one of these slots own the attention computation behind the attention seam
# (genaccel.attention). Their kernels nest in this order, innermost first, whatever the spec's order: the
# attention computation itself, token reduction around it (it shortens the sequence the computation
# sees), the streaming KV cache around both (it extends the keys with earlier chunks').
KERNEL_NESTING = (SLOT_ATTENTION_KERNEL, SLOT_TOKENS, SLOT_KV_CACHE)


def param(default, help: str, **kwargs):
    """A config field with a help text shown by `genaccel list` and `--help`."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclass
class AcceleratorConfig:
    """Base of accelerator configs: plain dataclasses whose fields are the spec parameters."""

    @classmethod
    def parameters(cls) -> list[dict[str, Any]]:
        hints = typing.get_type_hints(cls)
        return [
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": f.default if f.default is not dataclasses.MISSING else None,
                "help": f.metadata.get("help", ""),
            }
            for f in dataclasses.fields(cls)
        ]

    def validate(self) -> None:
        """Raise ValueError with a one-line reason if a value is out of range."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(hint) -> str:
    if hint in (int, float, str, bool):
        return hint.__name__
    return str(hint).replace("typing.", "")


class Accelerator:
    """One accelerator on one pipeline: install on each denoiser, remove, report stats."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config_class: ClassVar[type[AcceleratorConfig]]
    slots: ClassVar[frozenset[str]]
    # Slots of other accelerators this one cannot stack with although it does not take them over, with why.
    excludes: ClassVar[dict[str, str]] = {}
    # Slots whose accelerators stack with this one only if they honour the runtime's full passes, with why.
    needs_full_passes: ClassVar[dict[str, str]] = {}
    # True if this accelerator computes every call the runtime marks as a full pass (Runtime.full_pass).
    honours_full_pass: ClassVar[bool] = False
    # Why it cannot run while the sequence is split across processes (context parallelism); None if it can:
    # its decisions depend on the step alone, or on sums over every shard (Runtime.sum_over_shards). The
    # owners of the attention computation (KERNEL_NESTING slots) never can: see `context_parallel_refusal`.
    context_parallel_reason: ClassVar[str | None] = None
    # Order of `apply_outer` among the accelerators (lower first): compile's boundaries must wrap every other
    # accelerator's outer hooks.
    outer_rank: ClassVar[int] = 0

    def __init__(self, config: AcceleratorConfig, family, runtime: Runtime):
        self.config = config
        self.family = family
        self.runtime = runtime
        self.ledger = HookLedger()  # the hooks this accelerator registered

    @classmethod
    def context_parallel_refusal(cls) -> str | None:
        """Why this accelerator cannot run under context parallelism; None if it can."""
        if cls.slots & set(KERNEL_NESTING):
            return (
                "it changes the attention computation, which would see one process's shard of the sequence "
                "(split attention runs through diffusers' ring/Ulysses dispatch)"
            )
        return cls.context_parallel_reason

    # -- to implement
    @classmethod
    def unsupported_reason(cls, family) -> str | None:
        """Why this accelerator cannot run on `family` (a FamilyAdapter), from its facts; None if it can."""
        return None

    @classmethod
    def check_request(cls, config: AcceleratorConfig, request, profile: dict) -> None:
        """Raise ValueError with a one-line reason when `request` (a GenerationRequest with the model's
        defaults filled in) cannot use this config with this model's calibrated `profile` (checked by
        `genaccel.generation.prepare` before any work)."""

    def apply_pipeline(self, pipe, denoisers: list[torch.nn.Module]) -> None:
        """Change the pipeline itself, once, before any hook goes on (quant replaces weights); `uninstall`
        must undo it. Raise ValueError with a one-line reason when it cannot. Most accelerators need none."""

    def apply(self, denoiser: torch.nn.Module) -> None:
        """Register this accelerator's hooks on one denoising transformer."""
        raise NotImplementedError

    @classmethod
    def estimated_state_bytes(cls, config: AcceleratorConfig, shape) -> int:
        """Bytes this accelerator is expected to keep between transformer passes in one generation of `shape`
        (a `genaccel.memory.estimate.ActivationShape`), for the memory estimate before a run; 0 for none.
        (What a run measured is `genaccel.accelerators.state.measured_state_bytes`.)"""
        return 0

    def stats(self) -> dict[str, Any]:
        """Accelerator-specific figures of the last generation."""
        return {}

    def reset(self) -> None:
        """Forget per-generation figures (hook state is reset by the hook registry)."""

    def on_generation_start(self) -> None:
        """Called when a new generation starts, after hook state was reset."""

    def apply_inner(self, denoiser: torch.nn.Module) -> None:
        """Register hooks that must sit inside every other hook on the same modules, the acceleration's call
        counters included (called before any accelerator's `apply`). Most accelerators need none."""

    def apply_outer(self, denoiser: torch.nn.Module, accelerators: list["Accelerator"]) -> None:
        """Register hooks that must wrap every other accelerator's hooks on one denoiser (called once all of
        `accelerators`, this one included, are installed; only the step tracker goes on after). Most
        accelerators need none."""

    def attention_kernel(self, inner):
        """For accelerators holding a `KERNEL_NESTING` slot: the attention seam's kernel for one denoiser,
        wrapping `inner` (the kernel of the slots nested inside, or dense attention)."""
        raise NotImplementedError(f"{self.name} does not own the attention kernel")

    # -- shared
    def install(self, denoiser: torch.nn.Module) -> None:
        with self.ledger.recording(denoiser):
            self.apply(denoiser)

    def install_inner(self, denoiser: torch.nn.Module) -> None:
        with self.ledger.recording(denoiser):
            self.apply_inner(denoiser)

    def install_outer(self, denoiser: torch.nn.Module, accelerators: list["Accelerator"]) -> None:
        with self.ledger.recording(denoiser):
            self.apply_outer(denoiser, accelerators)

    def uninstall(self) -> None:
        self.ledger.remove_all()


class HookLedger:
    """Records the diffusers hooks registered while `recording`, and removes exactly those.

    Hooks must come off a module newest first: diffusers, removing a hook beneath one that replaces the
    forward, leaves that one calling the removed hook. Several ledgers on one pipeline are therefore removed
    together (`remove_ledgers`), in the order of a numbering they share."""

    _numbers = itertools.count()  # registration order across every ledger

    def __init__(self):
        self._entries: list[tuple[int, torch.nn.Module, str]] = []

    @staticmethod
    def _hooks(root: torch.nn.Module) -> set[tuple[int, str]]:
        found = set()
        for module in root.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                found.update((id(module), name) for name in registry.hooks)
        return found

    class _Recording:
        def __init__(self, ledger, root):
            self.ledger, self.root = ledger, root

        def __enter__(self):
            self.before = HookLedger._hooks(self.root)

        def __exit__(self, *exc):
            added = HookLedger._hooks(self.root) - self.before
            modules = {id(m): m for m in self.root.modules()}
            for i, name in sorted(added, key=_registration_order(modules)):
                self.ledger._entries.append((next(HookLedger._numbers), modules[i], name))
            HookRegistry.check_if_exists_or_initialize(self.root).invalidate_child_registries_cache()
            return False

    def recording(self, root: torch.nn.Module) -> "_Recording":
        """A context: every hook registered on `root` or below it inside is recorded."""
        return HookLedger._Recording(self, root)

    def entries(self) -> list[tuple[torch.nn.Module, str]]:
        """The (module, hook name) of every hook recorded, in the order recorded (a copy)."""
        return [(module, name) for _, module, name in self._entries]

    def hooks(self) -> list[ModelHook]:
        """The recorded hooks that are still registered, in the order recorded."""
        found = []
        for _, module, name in self._entries:
            registry = getattr(module, "_diffusers_hook", None)
            hook = registry.hooks.get(name) if registry is not None else None
            if hook is not None:
                found.append(hook)
        return found

    def remove_all(self) -> None:
        remove_ledgers([self])


def remove_ledgers(ledgers: list[HookLedger]) -> None:
    """Remove the hooks of every ledger, newest first across all of them."""
    entries = sorted((entry for ledger in ledgers for entry in ledger._entries), key=lambda e: e[0], reverse=True)
    modules = {}
    for _, module, name in entries:
        module._diffusers_hook.remove_hook(name, recurse=False)
        modules[id(module)] = module
    for module in modules.values():
        module._diffusers_hook.invalidate_child_registries_cache()
    for ledger in ledgers:
        ledger._entries.clear()


def _registration_order(modules: dict[int, torch.nn.Module]):
    """Sort key of (module id, hook name) pairs: by module, then by the hook's place in its registry."""

    def key(pair):
        index, name = pair
        return index, modules[index]._diffusers_hook._hook_order.index(name)

    return key


class PerBranchState:
    """Gives a hook that keeps one state object a separate state per CFG branch.

    Some diffusers hooks (e.g. Pyramid Attention Broadcast) keep a single state, so with separate
    cond/uncond forwards the uncond pass would reuse the cond pass's attention. This proxy picks the
    state of `runtime.branch` on every attribute access.
    """

    def __init__(self, factory, runtime: Runtime):
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "_runtime", runtime)
        object.__setattr__(self, "_states", {})

    def _current(self):
        states = self._states
        branch = self._runtime.branch
        if branch not in states:
            states[branch] = self._factory()
        return states[branch]

    def __getattr__(self, name):
        return getattr(self._current(), name)

    def __setattr__(self, name, value):
        setattr(self._current(), name, value)

    def reset(self, *args, **kwargs):
        self._states.clear()
