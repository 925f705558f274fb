"""Rolling KV cache: streamed generation's memory of earlier chunks, at a constant cost per chunk.

Each self-attention layer keeps the keys and values of finished latent frames; a chunk's queries attend to
them and to the chunk. The cache keeps the first `sink` frames for good and the latest `window` frames, so
memory and time per chunk stay flat however long the stream runs. Cached keys are re-positioned with the
family's frame rotary table, so a stream never outruns it. The streaming generator (genaccel.streaming)
installs this accelerator and commits each finished chunk; the math is genaccel/streaming/kv_cache.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import HookRegistry

from genaccel.accelerators.base import (
    SLOT_ATTENTION_KERNEL,
    SLOT_ATTENTION_OUTPUT,
    SLOT_CFG,
    SLOT_KV_CACHE,
    SLOT_MODULE_OUTPUT,
    SLOT_PASS,
    SLOT_TOKENS,
    AcceleratorConfig,
    param,
)
from genaccel.accelerators.kernel_owner import KernelOwner
from genaccel.attention.layouts import LAYOUTS
from genaccel.streaming.kv_cache import FrameRotation, KVCacheKernel, RollingKVCache
from genaccel.streaming.prompt_kv import prompt_projection_hooks

EVICTIONS = ("rolling",)
# Why a skipped or approximated computation cannot stack: the cache is filled by the commit pass's
# attention calls, so every one of them has to run.
_COMMIT = "a skipped or reused computation would leave the KV cache without that chunk's keys and values"


@dataclass
class KVCacheConfig(AcceleratorConfig):
    window: int = param(4, "latest latent frames kept in the cache (each chunk attends them)")
    sink: int = param(1, "first latent frames kept for good (an attention sink for the whole stream)")
    eviction: str = param("rolling", "rolling: drop the oldest frame after the sink when the window is full")

    def validate(self):
        if not 1 <= self.window <= 256:
            raise ValueError(f"window must be between 1 and 256 latent frames; got {self.window}")
        if not 0 <= self.sink <= 16:
            raise ValueError(f"sink must be between 0 and 16 latent frames; got {self.sink}")
        if self.eviction not in EVICTIONS:
            raise ValueError(f"eviction must be one of {', '.join(EVICTIONS)}; got '{self.eviction}'")


class KVCache(KernelOwner):
    name = "kvcache"
    summary = "rolling KV cache for streamed generation: attend a sink and a window of earlier frames (stream only)"
    config_class = KVCacheConfig
    slots = frozenset({SLOT_KV_CACHE})
    excludes = {
        SLOT_ATTENTION_OUTPUT: _COMMIT,
        SLOT_MODULE_OUTPUT: _COMMIT,
        SLOT_CFG: _COMMIT,
        SLOT_TOKENS: "the cache keeps every token of a frame; merged tokens change from call to call",
        SLOT_ATTENTION_KERNEL: "the sparse kernels plan square video-to-video attention, not a chunk against a cache",
    }
    # Pass skippers that compute the commit pass in full (teacache) stack: they skip denoising steps only.
    needs_full_passes = {SLOT_PASS: _COMMIT}

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """Keys and values of the window and sink frames in every self-attention layer."""
        return (
            2
            * shape.self_attention_layers
            * (config.window + config.sink)
            * shape.frame_tokens
            * shape.dim
            * shape.dtype_bytes
        )

    def __init__(self, config, family, runtime):
        super().__init__(config, family, runtime)
        self.caches: list[RollingKVCache] = []
        self._rotation: FrameRotation | None = None

    @classmethod
    def unsupported_reason(cls, family) -> str | None:
        layout = LAYOUTS.get(family.name)
        if layout is None or not layout.frame_rotary:
            return "its attention has no frame-indexed rotary table to re-position cached keys with"
        return None

    def apply(self, denoiser):
        """Read the denoiser's frame rotary table (its kernel is made right after, for the seam) and make the
        prompt's cross-attention keys/values computed once per prompt."""
        self._rotation = FrameRotation(getattr(denoiser, LAYOUTS[self.family.name].frame_rotary))
        for module, name, hook in prompt_projection_hooks(denoiser, self.family):
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)

    def make_kernel(self, inner):
        cache = RollingKVCache(self.config.window, self.config.sink)
        self.caches.append(cache)
        return KVCacheKernel(cache, self._rotation, inner)

    def uninstall(self) -> None:
        super().uninstall()
        self.caches.clear()
