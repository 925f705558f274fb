"""Quiet the import-time warnings of optional dependencies (imported first by `genaccel/__init__.py`).

torchao (the `quant` extra) logs on import that its CUDA kernels cannot load on a machine without them, torch
warns about the enum types torchao registers, and diffusers relays torchao's state on every import: all
harmless (`quant` says what runs where), and noise in every command otherwise. Errors still show.
"""

import logging

for _name in ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
