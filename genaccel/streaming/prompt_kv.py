"""The prompt's cross-attention keys and values, computed once per prompt instead of on every call.

In a stream the same prompt embedding meets every chunk, step and commit pass; its projection into the
denoiser (the family's `text_projection`) and the cross-attention key and value projections of that are
the same each time. `prompt_projection_hooks` wraps those modules with a hook that remembers the output for
the last few inputs: an input equal to a remembered one (same object, or same values: comparing costs far
less than projecting) gets the remembered output.
"""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

PROMPT_KV_HOOK = "genaccel_prompt_kv"


class PromptProjectionHook(ModelHook):
    """On a cross-attention key/value projection: the output for a prompt tensor seen before, reused."""

    _is_stateful = True  # forgets its prompts at every generation start

    def __init__(self, size: int = 4):
        super().__init__()
        self.size = size
        self.memo: list[tuple[torch.Tensor, int, torch.Tensor]] = []  # (input, its version, output)
        self.hits = 0

    def new_forward(self, module, hidden_states, *args, **kwargs):
        version = _version(hidden_states)
        for seen, seen_version, out in self.memo:  # the input is held, so its identity cannot be reused
            if seen is hidden_states and seen_version == version or _same_values(seen, hidden_states):
                self.hits += 1
                return out
        out = self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        self.memo = [*self.memo[-(self.size - 1) :], (hidden_states, version, out)]
        return out

    def reset_state(self, module):
        self.memo = []
        return module


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place modification counter (inference tensors keep none: -1)."""
    return -1 if tensor.is_inference() else tensor._version


def prompt_projection_hooks(denoiser, family):
    """[(module, name, hook)] for the family's prompt projection and the key/value projections of every
    cross-attention module of `denoiser`."""
    hooks = []
    if family.text_projection:
        hooks.append((denoiser.get_submodule(family.text_projection), PROMPT_KV_HOOK, PromptProjectionHook()))
    for _, attention in family.attention_layers(denoiser, "cross"):
        for name in ("to_k", "to_v"):
            projection = getattr(attention, name, None)
            if isinstance(projection, torch.nn.Module):
                hooks.append((projection, PROMPT_KV_HOOK, PromptProjectionHook()))
    return hooks
