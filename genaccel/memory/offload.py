"""Where a pipeline's weights live during a run, and how its VAE decodes: diffusers' offloading and tiling.

`place(pipe, offload, vae_tiling)` puts a loaded pipeline on its device in one of the offload modes of
`genaccel.generation.request.OFFLOAD_MODES`, through diffusers and accelerate: "model" is
`enable_model_cpu_offload`, "group" is diffusers' group offloading (one transformer block per group,
one layer at a time for the text encoder and the VAE, whose top-level modules have no block lists),
"sequential" is accelerate's `cpu_offload` of every component (what `enable_sequential_cpu_offload`
calls; called directly so that a CPU run keeps the device `cpu`, not `cpu:0`, which accelerate 1.15
cannot move tensors to). Switching modes takes the old one off first.

Accelerators and offloading share the modules' forward methods: accelerate's hooks remember the forward
they wrap when they are added, so genaccel's hooks go on first and come off only after the offloading is
removed (`Acceleration` changes call `unplaced`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.hooks import HookRegistry

# diffusers' group offloading registers these hooks (names from diffusers.hooks.group_offloading).
_GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")
_ATTR = "_genaccel_placement"


def target_device(pipe) -> torch.device:
    """The device genaccel's loader chose for `pipe` (else where its transformer is)."""
    return getattr(pipe, "_genaccel_device", None) or pipe.device


def placement(pipe) -> tuple[str, bool] | None:
    """(offload mode, VAE tiling) as genaccel last placed `pipe`; None if genaccel never placed it."""
    return getattr(pipe, _ATTR, None)


def _components(pipe) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            yield name, component


def _is_diffusers_model(module: torch.nn.Module) -> bool:
    from diffusers import ModelMixin

    return isinstance(module, ModelMixin)


def _remove_offload(pipe, mode: str) -> None:
    if mode in ("model", "sequential"):
        pipe.remove_all_hooks()
    elif mode == "group":
        for _, component in _components(pipe):
            registry = HookRegistry.check_if_exists_or_initialize(component)
            for name in _GROUP_HOOKS:
                registry.remove_hook(name, recurse=True)


def _add_offload(pipe, mode: str, device: torch.device) -> None:
    from accelerate import cpu_offload

    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.to("cpu")
        for _, component in _components(pipe):
            cpu_offload(component, device, offload_buffers=len(component._parameters) > 0)
    elif mode == "group":
        from diffusers.hooks import apply_group_offloading

        for _, component in _components(pipe):
            if _is_diffusers_model(component) and any(
                isinstance(child, torch.nn.ModuleList) for child in component.children()
            ):
                options = {"offload_type": "block_level", "num_blocks_per_group": 1}
            else:
                options = {"offload_type": "leaf_level"}
            apply_group_offloading(
                component,
                onload_device=device,
                offload_device=torch.device("cpu"),
                use_stream=device.type == "cuda",
                **options,
            )
    else:
        raise ValueError(f"unknown offload mode {mode!r}")


def _set_tiling(pipe, on: bool) -> None:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return
    vae.enable_tiling() if on else vae.disable_tiling()


def place(pipe, offload: str | None = None, vae_tiling: bool | None = None) -> tuple[str, bool]:
    """Put `pipe` on its device with `offload` and `vae_tiling` (None: keep the current choice, "none"/off
    the first time). Returns the placement now in effect."""
    current = placement(pipe)
    mode = offload or (current[0] if current else "none")
    tiling = vae_tiling if vae_tiling is not None else (current[1] if current else False)
    if current is None:
        # Inference only: weights that need no gradient. Offloading moves them while generations run in
        # inference mode, and accelerate re-creates each parameter with its `requires_grad` when its hooks
        # come off, which PyTorch refuses for a tensor made in inference mode that asks for a gradient.
        for _, component in _components(pipe):
            component.requires_grad_(False)
    if current is None or current[0] != mode:
        if current is not None:
            _remove_offload(pipe, current[0])
        _add_offload(pipe, mode, target_device(pipe))
    if current is None or current[1] != tiling:
        _set_tiling(pipe, tiling)
    setattr(pipe, _ATTR, (mode, tiling))
    return mode, tiling


@contextmanager
def unplaced(pipe) -> Iterator[None]:
    """Take the offloading off `pipe` for the block (to add or remove genaccel's hooks under it) and put
    it back after; a no-op when nothing is offloaded."""
    current = placement(pipe)
    if current is None or current[0] == "none" or getattr(pipe, "_genaccel_unplaced", False):
        yield  # nothing offloaded, or an enclosing block took it off already
        return
    _remove_offload(pipe, current[0])
    pipe._genaccel_unplaced = True
    try:
        yield
    finally:
        pipe._genaccel_unplaced = False
        _add_offload(pipe, current[0], target_device(pipe))
