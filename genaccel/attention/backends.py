"""Attention backends: which of diffusers' attention dispatch backends a run uses, and which can run here.

diffusers routes each model's attention through `dispatch_attention_fn` (diffusers/models/attention_dispatch.py)
to a backend: torch SDPA (`native`), FlexAttention (`flex`), flash-attn, SageAttention, xformers. A request's
`attention` names one; the acceleration sets it on every denoiser with diffusers' `set_attention_backend` and
puts the model's own back on removal (genaccel/engine/acceleration.py). When the attention seam carries an
accelerator's kernel, its dense path (`DenseKernel`) calls the same backend; sparse kernels keep their own.

The backends that fetch kernels from the Hugging Face Hub at run time (`*_hub`) are not offered: genaccel
downloads nothing while it runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import AttentionContext

DEFAULT = "native"
# The public backends, in the order `genaccel list` shows them, with the device they need.
BACKENDS = {
    "native": None,  # torch SDPA: whatever device torch runs on
    "flex": None,  # torch FlexAttention
    "flash": "cuda",
    "flash_varlen": "cuda",
    "sage": "cuda",
    "sage_varlen": "cuda",
    "xformers": "cuda",
}


def unusable_reason(name: str, device: torch.device | str | None = None) -> str | None:
    """Why backend `name` cannot run on `device` (or, with None, on this machine at all); None if it can."""
    if name not in BACKENDS:
        return f"unknown attention backend '{name}'; choose from {', '.join(BACKENDS)}"
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except RuntimeError as exc:
        return str(exc).split(". ")[0].strip() + " (not installed)"
    needs = BACKENDS[name]
    where = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if needs is not None and where != needs:
        return f"{name} attention needs a {needs.upper()} GPU; this run is on {where}"
    return None


def usable_backends(device: torch.device | str | None = None) -> list[str]:
    """The backends that can run on `device` (default: this machine's best device)."""
    return [name for name in BACKENDS if unusable_reason(name, device) is None]


class DenseKernel:
    """The seam's dense attention through one diffusers backend (native: torch SDPA). A call with the family's
    mask goes to SDPA, which every family's mask format suits; the other backends take no mask this way."""

    def __init__(self, backend: str = DEFAULT):
        self.backend = backend

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        if self.backend == DEFAULT or context.attn_mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=context.attn_mask)
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        out = dispatch_attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), backend=self.backend)
        return out.transpose(1, 2)


def set_backend(modules: list[torch.nn.Module], name: str) -> str:
    """Route the attention of `modules` (denoisers) through backend `name`; returns the process-wide active
    backend before, for `reset_backend` (diffusers makes the last one set the default of every later call)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry.get_active_backend()[0]
    for module in modules:
        module.set_attention_backend(name)
    return before.value if hasattr(before, "value") else str(before)


def reset_backend(modules: list[torch.nn.Module], before: str) -> None:
    """Give `modules` their own attention again and restore the process-wide default `set_backend` saw."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    for module in modules:
        module.reset_attention_backend()
    _AttentionBackendRegistry.set_active_backend(AttentionBackendName(before))
