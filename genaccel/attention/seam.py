"""The attention seam: per-instance hooks that route each self-attention call through a pluggable kernel.

- `AttentionSeamHook` (one per self-attention module): `initialize_hook` saves the module's processor and
  installs the family's seam processor with the kernel; `deinitalize_hook` (diffusers' spelling) puts the
  original object back. It is stateful, so `reset_stateful_hooks()` at a generation start resets the
  processor and the kernel.
- `GridHook` (one per denoiser): reads the latent token grid from the denoiser's input on every call, for
  the kernels' `AttentionContext.grid`.
- `install_seam(...)` registers both on one denoiser (built by `seam_hooks`) and returns what it registered;
  `remove_seam(...)` takes that off again. Every caller installs the seam with it: the acceleration
  (genaccel/engine/acceleration.py) inside a `HookLedger.recording` (genaccel/accelerators/base.py),
  which records the hooks for its own removal; tests and benchmarks with `remove_seam`.

The default kernel is `dense_kernel` (torch SDPA), which reproduces each family's own attention on the
native backend. A processor whose `_parallel_config` is set (context parallelism) is refused.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .kernels import dense_kernel
from .layouts import AttentionLayout, layout_of
from .processor import PROCESSORS

SEAM_HOOK = "genaccel_attention_seam"
GRID_HOOK = "genaccel_attention_grid"


@dataclass
class SeamState:
    """Shared by one denoiser's grid hook and its seam processors."""

    layout: AttentionLayout
    runtime: object | None = None  # genaccel.accelerators.runtime.Runtime: step and branch for the kernel's context
    grid: tuple[int, int, int] | None = None  # token grid of the current denoiser call


def set_processor(module: torch.nn.Module, processor) -> None:
    """Install `processor` on an attention module (MochiAttention has no `set_processor`: set the attribute)."""
    setter = getattr(module, "set_processor", None)
    if callable(setter):
        setter(processor)
    else:
        module.processor = processor


class GridHook(ModelHook):
    """On a denoiser: records its call's latent token grid in the shared SeamState."""

    def __init__(self, state: SeamState, tensor_format: str):
        super().__init__()
        self.state = state
        self.tensor_format = tensor_format
        self._signature = None

    def initialize_hook(self, module):
        self._signature = inspect.signature(module.forward)
        return module

    def pre_forward(self, module, *args, **kwargs):
        arguments = self._signature.bind_partial(*args, **kwargs).arguments
        self.state.grid = self.state.layout.token_grid(self.tensor_format, module.config, arguments)
        return args, kwargs


class AttentionSeamHook(ModelHook):
    """On a self-attention module: swaps in the seam processor, restores the original exactly on removal."""

    _is_stateful = True

    def __init__(self, state: SeamState, kernel=dense_kernel, layer: int = 0, name: str = "", axes=("f", "h", "w")):
        super().__init__()
        self.state = state
        self.kernel = kernel
        self.layer = layer
        self.name = name
        self.axes = tuple(axes)
        self.original = None
        self.processor = None

    def initialize_hook(self, module):
        original = module.processor
        if getattr(original, "_parallel_config", None) is not None:
            raise ValueError(f"{self.name}: the attention seam does not support context parallelism")
        self.original = original
        cls = PROCESSORS[self.state.layout.prelude]
        self.processor = cls(self.state.layout, self.kernel, self.state, original, self.layer, self.name, self.axes)
        set_processor(module, self.processor)
        return module

    def deinitalize_hook(self, module):
        if module.processor is self.processor:
            set_processor(module, self.original)
        return module

    def reset_state(self, module):
        if self.processor is not None:
            self.processor.reset()
        return module


def seam_hooks(denoiser: torch.nn.Module, family, kernel=dense_kernel, runtime=None):
    """The seam's hooks for one denoiser of `family` (a FamilyAdapter), built, not registered (`install_seam`
    registers them): [(denoiser, GRID_HOOK, GridHook), (module, SEAM_HOOK, AttentionSeamHook) per
    self-attention module]. Returns (state, hooks)."""
    layout = layout_of(family)
    state = SeamState(layout=layout, runtime=runtime)
    hooks = [(denoiser, GRID_HOOK, GridHook(state, family.tensor_format))]
    for index, (name, module) in enumerate(family.attention_layers(denoiser, "self")):
        block_list = name.rsplit(".", 2)[0]
        hook = AttentionSeamHook(state, kernel, layer=index, name=name, axes=layout.axes_for(block_list))
        hooks.append((module, SEAM_HOOK, hook))
    return state, hooks


def install_seam(
    denoiser: torch.nn.Module, family, kernel=dense_kernel, runtime=None
) -> list[tuple[torch.nn.Module, str]]:
    """Route the self-attention of one denoiser of `family` through `kernel`: register the seam's hooks
    (`seam_hooks`; `runtime`, a genaccel.accelerators.runtime.Runtime, gives the kernel's context its step and
    branch). Returns what it registered, [(module, hook name)] in order, for `remove_seam`. Inside a
    `HookLedger.recording(denoiser)` the ledger records them too, so its `remove_all` takes them off. If a
    registration fails (a processor under context parallelism), the hooks already registered are removed
    before the error propagates."""
    _, hooks = seam_hooks(denoiser, family, kernel, runtime)
    registered: list[tuple[torch.nn.Module, str]] = []
    try:
        for module, name, hook in hooks:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            registered.append((module, name))
    except BaseException:
        remove_seam(registered)
        raise
    # the denoiser's registry caches the registries below it (for reset_stateful_hooks): new ones were added
    HookRegistry.check_if_exists_or_initialize(denoiser).invalidate_child_registries_cache()
    return registered


def remove_seam(registered: list[tuple[torch.nn.Module, str]]) -> None:
    """Take off the hooks `install_seam` registered, newest first: every module gets its original
    processor object back."""
    for module, name in reversed(registered):
        module._diffusers_hook.remove_hook(name, recurse=False)
    for module in {id(m): m for m, _ in registered}.values():
        module._diffusers_hook.invalidate_child_registries_cache()
