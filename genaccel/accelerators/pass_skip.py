"""Skipping whole transformer passes: the hooks that TeaCache and schedule share.

The first block of the pass asks its accelerator's `decide(state, block, hidden, temb)` whether to compute
the pass. When it does, every block runs and the last one stores the pass's residual (output minus input,
for the video stream and, where blocks return it, the text stream). When it does not, the first block
returns its input plus that residual and every other block passes its input through. The state lives in a
diffusers `StateManager`, so each CFG branch keeps its own residual.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from genaccel.accelerators.block_io import BlockIO

BLOCK_HOOK = "genaccel_pass_skip_block"


class PassSkipState(BaseState):
    """What one CFG branch keeps between passes: the last computed residual."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.should_compute = True
        self.head_input: tuple | None = None
        self.residual: tuple | None = None


# decide(state, first block, its hidden states, its timestep embedding or None) -> compute the pass?
Decide = Callable[[PassSkipState, torch.nn.Module, torch.Tensor, "torch.Tensor | None"], bool]


class PassSkipHeadHook(ModelHook):
    """On the first block of the pass: compute the pass when `decide` says so, else add the cached residual."""

    _is_stateful = True

    def __init__(self, state: StateManager, decide: Decide, temb_arg: str | None = None):
        super().__init__()
        self.state = state
        self.decide = decide
        self.temb_arg = temb_arg
        self.io: BlockIO | None = None

    def initialize_hook(self, module):
        self.io = BlockIO(module)
        return module

    def reset_state(self, module):
        self.state.reset()
        return module

    def new_forward(self, module, *args, **kwargs):
        state: PassSkipState = self.state.get_state()
        hidden, encoder = self.io.inputs(args, kwargs)
        temb = self.io.arguments(args, kwargs)[self.temb_arg] if self.temb_arg else None
        state.should_compute = self.decide(state, module, hidden, temb)
        if state.should_compute:
            state.head_input = (hidden, encoder)
            return self.fn_ref.original_forward(*args, **kwargs)
        hidden_residual, encoder_residual = state.residual
        if encoder is not None and encoder_residual is not None:
            encoder = encoder + encoder_residual
        return self.io.pack(hidden + hidden_residual, encoder)


class PassSkipBlockHook(ModelHook):
    """On every other block of the pass: runs or passes through; the last one stores the residual."""

    def __init__(self, state: StateManager, is_tail: bool):
        super().__init__()
        self.state = state
        self.is_tail = is_tail
        self.io: BlockIO | None = None

    def initialize_hook(self, module):
        self.io = BlockIO(module)
        return module

    def new_forward(self, module, *args, **kwargs):
        state: PassSkipState = self.state.get_state()
        if not state.should_compute:
            return self.io.pack(*self.io.inputs(args, kwargs))
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            hidden, encoder = self.io.outputs(output)
            head_hidden, head_encoder = state.head_input
            encoder_residual = encoder - head_encoder if encoder is not None and head_encoder is not None else None
            state.residual = (hidden - head_hidden, encoder_residual)
            state.head_input = None
        return output


def apply_pass_skip(
    blocks: list[torch.nn.Module],
    decide: Decide,
    head_hook: str,
    state_class: type[PassSkipState] = PassSkipState,
    temb_arg: str | None = None,
) -> None:
    """Hook the pass `blocks` so that `decide` chooses, per CFG branch and step, to compute or reuse it."""
    state = StateManager(state_class)
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(
        PassSkipHeadHook(state, decide, temb_arg), head_hook
    )
    for block in blocks[1:]:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            PassSkipBlockHook(state, is_tail=block is blocks[-1]), BLOCK_HOOK
        )
