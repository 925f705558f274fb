"""Seam processors: each family's attention code up to the attention call, then a pluggable kernel.

One processor class per prelude style (`PROCESSORS`, keyed by `AttentionLayout.prelude`), each a copy of
diffusers 0.42.1's own processor (WanAttnProcessor, CogVideoXAttnProcessor2_0, HunyuanVideoAttnProcessor2_0,
LTXVideoAttnProcessor, MochiAttnProcessor2_0, AttnProcessor2_0) except for the attention call itself, which
goes through `SeamProcessor._attend` to `kernel(q, k, v, context)` in the canonical (B, H, S, D) layout.

Every `__call__` names its arguments as the original does: legacy `Attention.forward` and
`LTXAttention.forward` pass only the keyword arguments the processor's signature names, and Wan passes
them positionally. A call that is not self-attention (a key/value source given to a video-only family)
goes to the original processor unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_ltx import apply_rotary_emb as ltx_rotary
from diffusers.models.transformers.transformer_wan import _get_qkv_projections

from .kernels import AttentionContext


class SeamProcessor:
    """Base: the kernel, where the module sits (layer, name, grid axes), and the call into the kernel."""

    def __init__(self, layout, kernel, state, original, layer: int = 0, name: str = "", axes=("f", "h", "w")):
        self.layout = layout
        self.kernel = kernel
        self.state = state  # shared with the denoiser's grid hook: .grid, .runtime
        self.original = original  # the module's own processor, for calls that are not self-attention
        self.layer = layer
        self.name = name
        self.axes = tuple(axes)
        self.calls = 0  # kernel calls since the last reset

    def reset(self) -> None:
        """Per-generation reset: the call count, and the kernel's own state if it keeps any."""
        self.calls = 0
        reset = getattr(self.kernel, "reset", None)
        if callable(reset):
            reset()

    def _attend(self, query, key, value, text_len: int = 0, attn_mask=None, sample=None):
        """Run the kernel on q/k/v given in the family's call layout; return the output in that layout."""
        bshd = self.layout.call_layout == "BSHD"
        if bshd:
            query, key, value = (x.permute(0, 2, 1, 3) for x in (query, key, value))
        out = self._kernel_call(query, key, value, text_len, attn_mask, sample)
        return out.permute(0, 2, 1, 3) if bshd else out

    # Kernels decide from the step, the branch and their own state: traced by dynamo (the compile accelerator),
    # each new value would be a recompilation. They run outside the graph; the sparse ones compile themselves.
    @torch.compiler.disable
    def _kernel_call(self, query, key, value, text_len, attn_mask, sample):
        runtime = self.state.runtime
        context = AttentionContext(
            video=self.layout.video_range(query.shape[2], text_len),
            grid=self.state.grid,
            axes=self.axes,
            layer=self.layer,
            name=self.name,
            step=runtime.step_index if runtime is not None else None,
            branch=runtime.branch if runtime is not None else None,
            attn_mask=attn_mask,
            sample=sample,
        )
        self.calls += 1
        return self.kernel(query, key, value, context)


def _dispatch_mask(mask, query, key):
    """The mask as diffusers' native dispatch backend gives it to SDPA ((B, S_k) -> (B, 1, 1, S_k)); q/k in BSHD."""
    if mask is not None and mask.ndim == 2 and mask.shape[0] == query.shape[0] and mask.shape[1] == key.shape[1]:
        mask = mask.unsqueeze(1).unsqueeze(1)
    return mask


def _legacy_mask(attn, mask, sequence_length, batch_size):
    """The mask as the legacy SDPA processors prepare it: (B, H, S_q or 1, S_k)."""
    if mask is None:
        return None
    mask = attn.prepare_attention_mask(mask, sequence_length, batch_size)
    return mask.view(batch_size, attn.heads, -1, mask.shape[-1])


def _project_heads(attn, x, added: bool = False):
    """q, k, v of `x` (B, S, C) projected and split into heads (B, S, H, D), with the module's per-head q/k
    norms where it has them; `added`: the text stream's projections and norms (HunyuanVideo, Mochi)."""
    if added:
        projections, norms = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj), (attn.norm_added_q, attn.norm_added_k)
    else:
        projections, norms = (attn.to_q, attn.to_k, attn.to_v), (attn.norm_q, attn.norm_k)
    query, key, value = (project(x).unflatten(2, (attn.heads, -1)) for project in projections)
    if norms[0] is not None:
        query = norms[0](query)
    if norms[1] is not None:
        key = norms[1](key)
    return query, key, value


def _split_heads(attn, query, key, value, batch_size):
    """Legacy `Attention` processors' head split to (B, H, S, D), then the module's per-head q/k norms."""
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key, value, head_dim


class WanSeamProcessor(SeamProcessor):
    """WanAttnProcessor's self-attention: projections (fused or not), q/k norm, heads, rotary, kernel."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attn.add_k_proj is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _wan_rotary(query, *rotary_emb)
            key = _wan_rotary(key, *rotary_emb)
        hidden_states = self._attend(query, key, value, attn_mask=_dispatch_mask(attention_mask, query, key))
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


def _wan_rotary(hidden_states, freqs_cos, freqs_sin):
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


class CogVideoXSeamProcessor(SeamProcessor):
    """CogVideoXAttnProcessor2_0 (and its fused variant): cat([text, video]), per-head norms, video rotary."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = _legacy_mask(attn, attention_mask, sequence_length, batch_size)
        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
            qkv = attn.to_qkv(hidden_states)
            query, key, value = torch.split(qkv, qkv.shape[-1] // 3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value, head_dim = _split_heads(attn, query, key, value, batch_size)
        if image_rotary_emb is not None:
            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)
        hidden_states = self._attend(query, key, value, text_len=text_seq_length, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states


class HunyuanVideoSeamProcessor(SeamProcessor):
    """HunyuanVideoAttnProcessor2_0: video then text (concatenated, or appended from added projections),
    per-head norms, rotary on the video part, the text-padding mask."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        joint = attn.add_q_proj is None and encoder_hidden_states is not None
        if joint:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = _project_heads(attn, hidden_states)
        if image_rotary_emb is not None:
            if joint:
                n = encoder_hidden_states.shape[1]
                query = torch.cat(
                    [apply_rotary_emb(query[:, :-n], image_rotary_emb, sequence_dim=1), query[:, -n:]], dim=1
                )
                key = torch.cat([apply_rotary_emb(key[:, :-n], image_rotary_emb, sequence_dim=1), key[:, -n:]], dim=1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if attn.add_q_proj is not None and encoder_hidden_states is not None:
            encoder_query, encoder_key, encoder_value = _project_heads(attn, encoder_hidden_states, added=True)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)
        text_len = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else 0
        mask = _dispatch_mask(attention_mask, query, key)
        hidden_states = self._attend(query, key, value, text_len=text_len, attn_mask=mask)
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            n = encoder_hidden_states.shape[1]
            hidden_states, encoder_hidden_states = hidden_states[:, :-n], hidden_states[:, -n:]
            if getattr(attn, "to_out", None) is not None:
                hidden_states = attn.to_out[0](hidden_states)
                hidden_states = attn.to_out[1](hidden_states)
            if getattr(attn, "to_add_out", None) is not None:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


class LTXSeamProcessor(SeamProcessor):
    """LTXVideoAttnProcessor's self-attention: q/k RMSNorm over all heads, rotary before the head split."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = _legacy_mask(attn, attention_mask, sequence_length, batch_size)
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if image_rotary_emb is not None:
            query = ltx_rotary(query, image_rotary_emb)
            key = ltx_rotary(key, image_rotary_emb)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        hidden_states = self._attend(query, key, value, attn_mask=_dispatch_mask(attention_mask, query, key))
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


class MochiSeamProcessor(SeamProcessor):
    """MochiAttnProcessor2_0: per-head norms, learned 3-D rotary, then one kernel call per sample on its
    video tokens followed by its valid text tokens (padded text rows come back as zeros)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb=None):
        query, key, value = _project_heads(attn, hidden_states)
        encoder_query, encoder_key, encoder_value = _project_heads(attn, encoder_hidden_states, added=True)
        if image_rotary_emb is not None:
            query = _mochi_rotary(query, *image_rotary_emb)
            key = _mochi_rotary(key, *image_rotary_emb)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        encoder_query, encoder_key, encoder_value = (
            encoder_query.transpose(1, 2),
            encoder_key.transpose(1, 2),
            encoder_value.transpose(1, 2),
        )
        sequence_length = query.size(2)
        encoder_sequence_length = encoder_query.size(2)
        total_length = sequence_length + encoder_sequence_length
        outputs = []
        for idx in range(query.shape[0]):
            valid = torch.nonzero(attention_mask[idx][None, :].flatten(), as_tuple=False).flatten()
            q = torch.cat([query[idx : idx + 1], encoder_query[idx : idx + 1, :, valid, :]], dim=2)
            k = torch.cat([key[idx : idx + 1], encoder_key[idx : idx + 1, :, valid, :]], dim=2)
            v = torch.cat([value[idx : idx + 1], encoder_value[idx : idx + 1, :, valid, :]], dim=2)
            out = self._attend(q, k, v, text_len=valid.numel(), sample=idx)
            outputs.append(F.pad(out, (0, 0, 0, total_length - out.size(2))))
        hidden_states = torch.cat(outputs, dim=0).transpose(1, 2).flatten(2, 3)
        hidden_states, encoder_hidden_states = hidden_states.split_with_sizes(
            (sequence_length, encoder_sequence_length), dim=1
        )
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if hasattr(attn, "to_add_out"):
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _mochi_rotary(x, freqs_cos, freqs_sin):
    x_even = x[..., 0::2].float()
    x_odd = x[..., 1::2].float()
    cos = (x_even * freqs_cos - x_odd * freqs_sin).to(x.dtype)
    sin = (x_even * freqs_sin + x_odd * freqs_cos).to(x.dtype)
    return torch.stack([cos, sin], dim=-1).flatten(-2)


class Attn2_0SeamProcessor(SeamProcessor):
    """AttnProcessor2_0's self-attention (Latte's BasicTransformerBlock.attn1): the legacy generic prelude."""

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        if encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = _legacy_mask(attn, attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        query, key, value, head_dim = _split_heads(attn, query, key, value, batch_size)
        hidden_states = self._attend(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


PROCESSORS: dict[str, type[SeamProcessor]] = {
    "wan": WanSeamProcessor,
    "cogvideox": CogVideoXSeamProcessor,
    "hunyuanvideo": HunyuanVideoSeamProcessor,
    "ltx": LTXSeamProcessor,
    "mochi": MochiSeamProcessor,
    "attn2_0": Attn2_0SeamProcessor,
}
