"""The prompt's cross-attention keys and values, computed once per prompt instead of on every call.

In a stream the same prompt embedding meets every chunk, step and commit pass; the cross-attention key and
value projections of it are the same each time. `prompt_projection_hooks` wraps each cross-attention
module's key/value projections with a hook that remembers its output for the last few prompt tensors
(by identity: the streaming generator passes one tensor per prompt and branch).
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
        for seen, version, out in self.memo:  # the input is held, so its identity cannot be reused
            if seen is hidden_states and version == hidden_states._version:
                self.hits += 1
                return out
        out = self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        self.memo = [*self.memo[-(self.size - 1):], (hidden_states, hidden_states._version, out)]
        return out

    def reset_state(self, module):
        self.memo = []
        return module


def prompt_projection_hooks(denoiser, family):
    """[(module, name, hook)] for the key/value projections of every cross-attention module of `denoiser`."""
    hooks = []
    for _, attention in family.attention_layers(denoiser, "cross"):
        for name in ("to_k", "to_v"):
            projection = getattr(attention, name, None)
            if isinstance(projection, torch.nn.Module):
                hooks.append((projection, PROMPT_KV_HOOK, PromptProjectionHook()))
    return hooks
