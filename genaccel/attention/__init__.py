"""The attention seam: every family's self-attention routed through one pluggable kernel.

`layouts` holds the per-family facts (`AttentionLayout`), `processor` the per-prelude processors, `kernels`
the kernel interface (`AttentionContext`) and `dense_kernel`, `seam` the hooks that install and remove it, `flex` the
block-sparse FlexAttention kernel (`BlockSparseKernel`) with its example tables.
"""

from .flex import BlockSparseKernel, full_table, local_frames_table
from .kernels import AttentionContext, dense_kernel
from .layouts import LAYOUTS, AttentionLayout, layout_of, tokens_in
from .processor import PROCESSORS, SeamProcessor
from .seam import GRID_HOOK, SEAM_HOOK, AttentionSeamHook, GridHook, SeamState, seam_hooks

__all__ = [
    "AttentionContext",
    "AttentionLayout",
    "AttentionSeamHook",
    "BlockSparseKernel",
    "GRID_HOOK",
    "GridHook",
    "LAYOUTS",
    "PROCESSORS",
    "SEAM_HOOK",
    "SeamProcessor",
    "SeamState",
    "dense_kernel",
    "full_table",
    "layout_of",
    "local_frames_table",
    "seam_hooks",
    "tokens_in",
]
