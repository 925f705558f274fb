"""The attention seam: every family's self-attention routed through one pluggable kernel.

`layouts` holds the per-family facts (`AttentionLayout`), `processor` the per-prelude processors, `kernels`
the kernel interface (`AttentionContext`) and `dense_kernel`, `seam` the hooks that route a denoiser's
attention through a kernel (`install_seam`, `remove_seam`). Sparse attention: `flex` is the block-sparse
FlexAttention engine (`BlockSparseAttention`, `BlockPlan`), `patterns` the `Pattern` interface and the
block-table helpers the methods share (each method's own rule lives with its accelerator,
genaccel/accelerators/{svg,radial,sta,topk}.py), `sparse` the seam kernel that runs a pattern
(`SparseAttentionKernel`). `causal` is block-causal attention over latent frames (`BlockCausalKernel`), the
attention of chunked, streamed generation.
"""

from .causal import BlockCausalKernel, block_causal_mask
from .flex import BlockPlan, BlockSparseAttention
from .kernels import AttentionContext, dense_kernel
from .layouts import LAYOUTS, AttentionLayout, layout_of, tokens_in
from .processor import PROCESSORS, SeamProcessor
from .seam import GRID_HOOK, SEAM_HOOK, AttentionSeamHook, GridHook, SeamState, install_seam, remove_seam, seam_hooks
from .sparse import SparseAttentionKernel

__all__ = [
    "AttentionContext",
    "AttentionLayout",
    "AttentionSeamHook",
    "BlockCausalKernel",
    "BlockPlan",
    "BlockSparseAttention",
    "GRID_HOOK",
    "GridHook",
    "LAYOUTS",
    "PROCESSORS",
    "SEAM_HOOK",
    "SeamProcessor",
    "SeamState",
    "SparseAttentionKernel",
    "block_causal_mask",
    "dense_kernel",
    "install_seam",
    "layout_of",
    "remove_seam",
    "seam_hooks",
    "tokens_in",
]
