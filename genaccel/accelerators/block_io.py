"""Reading a transformer block's inputs and packing its outputs, for hooks that skip blocks.

Block signatures differ by family (Latte's blocks take `timestep`, CogVideoX's return the text
stream too); diffusers' `TransformerBlockRegistry` records where outputs sit, and the block's own
signature says where inputs sit.
"""

from __future__ import annotations

import inspect

import torch
from diffusers.hooks._helpers import TransformerBlockRegistry


class BlockIO:
    """Argument access and output packing for one block class."""

    def __init__(self, block: torch.nn.Module):
        self._signature = inspect.signature(block.forward)
        metadata = TransformerBlockRegistry.get(type(block))
        self.hidden_index = metadata.return_hidden_states_index
        self.encoder_index = metadata.return_encoder_hidden_states_index

    def arguments(self, args, kwargs) -> dict:
        return self._signature.bind_partial(*args, **kwargs).arguments

    def inputs(self, args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden_states, encoder_hidden_states or None if the block does not return it)."""
        bound = self.arguments(args, kwargs)
        encoder = bound.get("encoder_hidden_states") if self.encoder_index is not None else None
        return bound["hidden_states"], encoder

    def outputs(self, output) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(output, tuple):
            encoder = output[self.encoder_index] if self.encoder_index is not None else None
            return output[self.hidden_index], encoder
        return output, None

    def pack(self, hidden: torch.Tensor, encoder: torch.Tensor | None):
        """Build the block's return value from the two streams."""
        if self.encoder_index is None:
            return hidden
        out = [None, None]
        out[self.hidden_index] = hidden
        out[self.encoder_index] = encoder
        return tuple(out)
