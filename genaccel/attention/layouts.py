"""Per-family attention layouts: what the attention seam needs to know about a family's self-attention.

One frozen `AttentionLayout` per family, keyed by the `FamilyAdapter` name (pipelines/families.py), states as
data: which prelude the seam processor reproduces (how q/k/v are projected and normed, where rotary
embeddings are applied), the tensor layout at the family's attention call, where text tokens sit in a joint
sequence, whether the call runs once per sample, which grid axes a block list's sequence spans, and where the
latent token grid comes from. Facts read from diffusers 0.42.1 (models/transformers/, models/attention_processor.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

AXES = ("f", "h", "w")  # latent token grid axes: frames, height, width (after patching), frame-major order


@dataclass(frozen=True)
class AttentionLayout:
    """What the seam processor of one family needs, as data."""

    family: str
    # The processor that reproduces the family's attention code up to the attention call (key into
    # genaccel.attention.processor.PROCESSORS).
    prelude: str
    # How q/k are normalised: "across_heads" (one norm over (B, S, H*D) before the head split), "per_head"
    # (over D after the head split, when the module has norms), "none".
    qk_norm: str
    # Where rotary embeddings are applied: "none", "after_heads" (to (B, S, H, D) after q/k norm),
    # "before_heads" (to (B, S, H*D) after q/k norm), "video_part" (only to the video tokens of a joint
    # sequence, after the head split).
    rotary: str
    # Tensor layout at the family's own attention call: "BSHD" (dispatch_attention_fn) or "BHSD" (SDPA).
    call_layout: str
    # Where text tokens sit in the self-attention sequence: "none", "first" or "last".
    text: str
    # True when the family's attention runs once per sample (Mochi drops each sample's padded text tokens).
    per_sample: bool = False
    # Grid axes the video tokens of one attention call span, by block list; block lists not named span the
    # whole grid ("f", "h", "w"). Latte factorises: spatial blocks see one frame, temporal blocks one pixel.
    block_axes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Where the latent token grid comes from: the denoiser's `grid_input` argument in the family's latent
    # format (FamilyAdapter.tensor_format); for packed token latents ("BSC") the forward arguments named in
    # `size_args` (frames, height, width in latent units).
    grid_input: str = "hidden_states"
    size_args: tuple[str, str, str] = ()
    # Transformer config attributes of the patch size: `patch` is an int (spatial) or a (t, h, w) tuple;
    # `patch_t` names the temporal patch ("" or None-valued: 1).
    patch: str = "patch_size"
    patch_t: str = ""
    # Token merging around a block's modules (genaccel/tokens/tome.py): the self-attention module's keyword
    # argument holding the rotary tables ("" for none), the dimension of those tables that runs over the
    # video tokens, and the block's feed-forward attribute ("" for none).
    rotary_arg: str = ""
    rotary_token_dim: int = 0
    ffn: str = "ff"
    # The self-attention module takes a (B, 1, 1, S) key mask (or none) that reaches SDPA as it is, so token
    # merging can add its size bias to it (proportional attention).
    key_mask: bool = False
    # The denoiser's rotary module (attribute name) whose `freqs_cos`/`freqs_sin` tables (positions x D)
    # begin with `t_dim` columns that rotate interleaved (even, odd) pairs by the latent frame index, as
    # Wan's WanRotaryPosEmbed; "" where there is none. A rolling KV cache re-positions cached keys with it.
    frame_rotary: str = ""

    def __post_init__(self):
        checks = {
            "qk_norm": ("across_heads", "per_head", "none"),
            "rotary": ("none", "after_heads", "before_heads", "video_part"),
            "call_layout": ("BSHD", "BHSD"),
            "text": ("none", "first", "last"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.family}: {name} must be one of {allowed}, not {getattr(self, name)!r}")
        for axes in self.block_axes.values():
            if not axes or any(a not in AXES for a in axes):
                raise ValueError(f"{self.family}: block axes must be drawn from {AXES}, not {axes!r}")

    def axes_for(self, block_list: str) -> tuple[str, ...]:
        """Grid axes spanned by the video tokens of an attention call in `block_list`."""
        return self.block_axes.get(block_list, AXES)

    def video_range(self, seq_len: int, text_len: int) -> tuple[int, int]:
        """[start, end) of the video tokens in a sequence of `seq_len` tokens holding `text_len` text tokens."""
        if self.text == "first":
            return text_len, seq_len
        if self.text == "last":
            return 0, seq_len - text_len
        return 0, seq_len

    def patch_sizes(self, config: Any) -> tuple[int, int, int]:
        """(t, h, w) patch size read from a transformer config."""
        p = getattr(config, self.patch)
        if isinstance(p, (tuple, list)):
            return tuple(int(x) for x in p)
        pt = getattr(config, self.patch_t, None) if self.patch_t else None
        return int(pt or 1), int(p), int(p)

    def token_grid(self, tensor_format: str, config: Any, arguments: dict) -> tuple[int, int, int]:
        """(frames, height, width) of the latent token grid after patching, from the denoiser's bound
        forward arguments and config; `tensor_format` is the family's latent layout."""
        if tensor_format == "BSC":
            sizes = [int(arguments[name]) for name in self.size_args]
        else:
            shape = arguments[self.grid_input].shape
            sizes = [shape[tensor_format.index(axis)] for axis in "FHW"]
        return tuple(s // p for s, p in zip(sizes, self.patch_sizes(config)))


def tokens_in(grid: tuple[int, int, int], axes: tuple[str, ...]) -> int:
    """Number of video tokens one attention call sees when its sequence spans `axes` of `grid`."""
    return prod(grid[AXES.index(a)] for a in axes)


LAYOUTS: dict[str, AttentionLayout] = {}


def register_layout(layout: AttentionLayout) -> AttentionLayout:
    LAYOUTS[layout.family] = layout
    return layout


# Wan: WanAttnProcessor; q/k RMSNorm over all heads, rotary (1, S, 1, D) tables after the head split,
# dispatch_attention_fn on (B, S, H, D); self-attention (attn1) holds video tokens only; patch_size (t, h, w);
# the feed-forward is `ffn`.
register_layout(
    AttentionLayout(
        family="wan",
        prelude="wan",
        qk_norm="across_heads",
        rotary="after_heads",
        call_layout="BSHD",
        text="none",
        rotary_arg="rotary_emb",
        rotary_token_dim=1,
        ffn="ffn",
        key_mask=True,
        frame_rotary="rope",
    )
)
# CogVideoX: CogVideoXAttnProcessor2_0 on a legacy Attention; text first (cat([text, video])), per-head
# norms, rotary (S, D) on the video part only; SDPA on (B, H, S, D); patch_size, patch_size_t (None in 1.0);
# the feed-forward sees cat([text, video]).
register_layout(
    AttentionLayout(
        family="cogvideox",
        prelude="cogvideox",
        qk_norm="per_head",
        rotary="video_part",
        call_layout="BHSD",
        text="first",
        patch_t="patch_size_t",
        rotary_arg="image_rotary_emb",
        rotary_token_dim=0,
    )
)
# HunyuanVideo: HunyuanVideoAttnProcessor2_0 on a legacy Attention; video then text (dual-stream blocks
# append projected text q/k/v, single-stream blocks concatenate before projecting), rotary (S, D) on the
# video part, a (B, 1, 1, S) mask over [video, text]; dispatch_attention_fn on (B, S, H, D); single-stream
# blocks have no separate feed-forward.
register_layout(
    AttentionLayout(
        family="hunyuanvideo",
        prelude="hunyuanvideo",
        qk_norm="per_head",
        rotary="video_part",
        call_layout="BSHD",
        text="last",
        patch_t="patch_size_t",
        rotary_arg="image_rotary_emb",
        rotary_token_dim=0,
        key_mask=True,
    )
)
# LTX-Video: LTXVideoAttnProcessor on LTXAttention; q/k RMSNorm over all heads, rotary (B, S, C) tables on
# (B, S, H*D) before the head split; packed (B, S, C) latents, the grid from the forward's num_frames/height/width.
register_layout(
    AttentionLayout(
        family="ltx",
        prelude="ltx",
        qk_norm="across_heads",
        rotary="before_heads",
        call_layout="BSHD",
        text="none",
        size_args=("num_frames", "height", "width"),
        patch_t="patch_size_t",
        rotary_arg="image_rotary_emb",
        rotary_token_dim=1,
    )
)
# Latte: AttnProcessor2_0 on BasicTransformerBlock.attn1; no rotary (absolute sincos); factorised spatial
# blocks (B*F, H*W) and temporal blocks (B*H*W, F); SDPA on (B, H, S, D).
register_layout(
    AttentionLayout(
        family="latte",
        prelude="attn2_0",
        qk_norm="per_head",
        rotary="none",
        call_layout="BHSD",
        text="none",
        block_axes={"transformer_blocks": ("h", "w"), "temporal_transformer_blocks": ("f",)},
    )
)
# Mochi: MochiAttnProcessor2_0 on MochiAttention; per-head RMSNorms, learned 3-D rotary (S, H, D/2) after
# the norms, video then each sample's valid text tokens, SDPA per sample on (1, H, S, D); a text-only mask.
register_layout(
    AttentionLayout(
        family="mochi",
        prelude="mochi",
        qk_norm="per_head",
        rotary="after_heads",
        call_layout="BHSD",
        text="last",
        per_sample=True,
        rotary_arg="image_rotary_emb",
        rotary_token_dim=0,
    )
)


def layout_of(family) -> AttentionLayout:
    """The layout of a FamilyAdapter (or family name); KeyError names the families that have one."""
    name = getattr(family, "name", family)
    if name not in LAYOUTS:
        raise KeyError(f"no attention layout for family {name!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[name]
