"""A rolling key/value cache over latent frames: the attention state of streamed generation.

Streaming runs the denoiser on one chunk of latent frames at a time. Every self-attention layer keeps
the keys and values of the frames already finished ("committed" by one pass over the clean chunk); a
chunk's queries attend to them and to the chunk itself. The cache holds the first `sink` frames for good
and the latest `window` frames; evicting the frames between keeps memory and time per chunk flat however
long the stream runs.

Positions: the denoiser sees only the chunk, so its rotary tables place the chunk at frames 0..c-1.
Cached keys carry the rotation of their own chunk's call; when read, cached frame j of n is rotated on to
position j - n, so the cache reads as one contiguous clip ending right before the chunk (the sink just
before the window, as StreamingLLM places it). Rotary attention depends only on position differences, so
this is the same as placing the chunk after the cache, and positions never outrun the rotary table.

`RollingKVCache` is the state (one per denoiser, shared with the streaming generator, which opens
`commit_pass()` around its clean pass); `KVCacheKernel` is the attention-seam kernel that reads and
extends it; `FrameRotation` rotates keys by whole frames with the family's own rotary tables.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from genaccel.attention.kernels import AttentionContext, dense_kernel


class FrameRotation:
    """Rotates the frame band of keys by a (signed) number of frames, from a Wan-style rotary module: its
    `freqs_cos`/`freqs_sin` tables (positions x D) start with `t_dim` columns rotating interleaved pairs."""

    def __init__(self, rope: torch.nn.Module):
        self.t_dim = int(rope.t_dim)
        self.cos = rope.freqs_cos[:, 0 : self.t_dim : 2].float()  # (positions, t_dim / 2): cos(p * freq_i)
        self.sin = rope.freqs_sin[:, 1 : self.t_dim : 2].float()
        self.limit = self.cos.shape[0]

    def __call__(self, keys: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """`keys` (B, H, S, D) rotated by `frames` (S,) int frames each (negative: backwards)."""
        steps = frames.abs()
        if int(steps.max()) >= self.limit:
            raise ValueError(f"a rotation of {int(steps.max())} frames is beyond the rotary table ({self.limit})")
        cos = self.cos.to(keys.device)[steps]
        sin = self.sin.to(keys.device)[steps] * frames.sign().unsqueeze(-1).to(self.sin.dtype)
        band = keys[..., : self.t_dim].float()
        x1, x2 = band[..., 0::2], band[..., 1::2]
        out = keys.clone()
        out[..., 0 : self.t_dim : 2] = (x1 * cos - x2 * sin).to(keys.dtype)
        out[..., 1 : self.t_dim : 2] = (x1 * sin + x2 * cos).to(keys.dtype)
        return out


def kept_frames(count: int, sink: int, window: int) -> list[int]:
    """Indices (in commit order) of the frames a cache of `count` frames keeps: the first `sink` and the
    last `window`."""
    if count <= sink + window:
        return list(range(count))
    return list(range(sink)) + list(range(count - window, count))


@dataclass
class _Entry:
    """One layer's cache for one CFG branch."""

    keys: torch.Tensor  # (B, H, frames * tokens_per_frame, D), each frame rotated as at its commit
    values: torch.Tensor
    positions: list[int]  # the rotary position each cached frame's keys carry (its index in its chunk)
    frames: list[int]  # stream frame index of each cached frame
    tokens_per_frame: int
    committed: int = 0  # frames committed so far (evicted ones included)
    rotated: torch.Tensor | None = field(default=None, repr=False)  # keys at read positions (until next commit)


class RollingKVCache:
    """Cached keys/values of committed latent frames, per (CFG branch, self-attention layer)."""

    def __init__(self, window: int, sink: int):
        if window < 1 or sink < 0:
            raise ValueError("the KV cache needs window >= 1 and sink >= 0")
        self.window = window
        self.sink = sink
        self.entries: dict[tuple[str | None, int], _Entry] = {}
        self.committing = False

    @contextmanager
    def commit_pass(self):
        """Inside: attention calls append their chunk's keys/values to the cache (then evict)."""
        self.committing = True
        try:
            yield self
        finally:
            self.committing = False

    def clear(self) -> None:
        self.entries.clear()

    def frames(self, branch: str | None = None) -> list[int]:
        """Stream frame indices held by the cache (of the first layer of `branch`, or of any branch)."""
        for (b, _layer), entry in sorted(self.entries.items(), key=lambda kv: kv[0][1]):
            if branch is None or b == branch:
                return list(entry.frames)
        return []

    def nbytes(self) -> int:
        return sum(
            e.keys.numel() * e.keys.element_size() + e.values.numel() * e.values.element_size()
            for e in self.entries.values()
        )

    def read(self, key, rotation: FrameRotation) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Cached keys (rotated to sit right before the current chunk) and values, or None when empty."""
        entry = self.entries.get(key)
        if entry is None or not entry.frames:
            return None
        if entry.rotated is None:
            n = len(entry.frames)
            shift = torch.tensor([j - n - p for j, p in enumerate(entry.positions)])
            entry.rotated = rotation(entry.keys, shift.repeat_interleave(entry.tokens_per_frame).to(entry.keys.device))
        return entry.rotated, entry.values

    def commit(self, key, keys: torch.Tensor, values: torch.Tensor, tokens_per_frame: int) -> None:
        """Append one chunk's keys/values (its frames at positions 0..c-1), then evict down to sink + window."""
        chunk_frames = keys.shape[2] // tokens_per_frame
        entry = self.entries.get(key)
        if entry is None or entry.tokens_per_frame != tokens_per_frame:
            entry = _Entry(keys[:, :, :0], values[:, :, :0], [], [], tokens_per_frame)
            self.entries[key] = entry
        entry.keys = torch.cat([entry.keys, keys.detach()], dim=2)
        entry.values = torch.cat([entry.values, values.detach()], dim=2)
        entry.positions += list(range(chunk_frames))
        entry.frames += list(range(entry.committed, entry.committed + chunk_frames))
        entry.committed += chunk_frames
        keep = kept_frames(len(entry.frames), self.sink, self.window)
        if len(keep) < len(entry.frames):
            tokens = torch.tensor(keep, device=keys.device).repeat_interleave(tokens_per_frame) * tokens_per_frame
            tokens = tokens + torch.arange(tokens_per_frame, device=keys.device).repeat(len(keep))
            entry.keys = entry.keys.index_select(2, tokens)
            entry.values = entry.values.index_select(2, tokens)
            entry.positions = [entry.positions[i] for i in keep]
            entry.frames = [entry.frames[i] for i in keep]
        entry.rotated = None


class KVCacheKernel:
    """Seam kernel: the chunk's queries attend to the cached frames and to the chunk (via `inner`); in a
    commit pass the chunk's keys/values are added to the cache."""

    def __init__(self, cache: RollingKVCache, rotation: FrameRotation, inner=dense_kernel):
        self.cache = cache
        self.rotation = rotation
        self.inner = inner
        self.calls_with_cache = 0
        self.cached_keys = 0  # cached keys attended, summed over calls

    def reset(self) -> None:
        """A new generation starts with an empty cache."""
        self.cache.clear()
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()

    def reset_stats(self) -> None:
        self.calls_with_cache = 0
        self.cached_keys = 0

    def stats(self) -> dict:
        return {
            "calls_with_cache": self.calls_with_cache,
            "cached_keys_attended": self.cached_keys,
            "cache_bytes": self.cache.nbytes(),
            "cached_frames": self.cache.frames(),
        }

    def __call__(self, q, k, v, context: AttentionContext):
        if context.grid is None or context.video != (0, q.shape[2]):
            raise ValueError("the KV cache needs video-only self-attention over a known frame grid")
        tokens_per_frame = context.grid[1] * context.grid[2]
        key = (context.branch, context.layer)
        cached = self.cache.read(key, self.rotation)
        keys, values, mask = k, v, context.attn_mask
        if cached is not None:
            keys = torch.cat([cached[0].to(k.dtype), k], dim=2)
            values = torch.cat([cached[1].to(v.dtype), v], dim=2)
            extra = cached[0].shape[2]
            if mask is not None:  # the family's mask covers the chunk's keys: the cached ones are all visible
                fill = True if mask.dtype == torch.bool else 0.0
                pad = torch.full((*mask.shape[:-1], extra), fill, dtype=mask.dtype, device=mask.device)
                mask = torch.cat([pad, mask], dim=-1)
            self.calls_with_cache += 1
            self.cached_keys += extra
        out = self.inner(q, keys, values, dataclasses.replace(context, attn_mask=mask))
        if self.cache.committing:
            self.cache.commit(key, k, v, tokens_per_frame)
        return out
