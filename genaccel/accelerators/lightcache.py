"""LightCache: memory-lean caching, so that a cache accelerator's speed-up does not cost its memory.

Caching accelerators (TeaCache, MagCache, FirstBlockCache, PAB, FasterCache, TaylorSeer, the CFG cache) keep
residuals, attention outputs or derivatives on the GPU for the whole generation: with CFG that is one or
more hidden-state-sized tensors per branch, per layer for the attention caches, which can decide whether a
long video fits. LightCache (training-free, stage-specific memory reduction for cached diffusion sampling)
cuts the peak of each stage with its own technique:

1. Cache swapping (`offload`): between the transformer calls that use it, every other accelerator's cache
   state (found generically by `genaccel.accelerators.state`) lives in CPU memory, pinned on CUDA. After each
   denoiser call the state of its CFG branch (and state kept for all branches) is copied out on a side CUDA
   stream; at the start of that branch's next call, once the step is known and before the blocks run, it is
   copied back on the side stream, and the compute stream waits on an event in front of the first module
   holding another accelerator's hook, so the copy overlaps the call's embedding work. The copies are
   exact: outputs are bit-identical with offloading on or off.
2. Feature chunking (`ffn_chunks`): each block's feed-forward (the family's layout `ffn`) runs over the
   token sequence in chunks whose outputs are concatenated. The feed-forward works token by token, so the
   result is the same up to float rounding, and its hidden activation (4x the model width) peaks at one
   chunk's size.
3. Sliced decoding: the VAE decode, where the last peak sits once the denoising is lean, runs in tiles with
   the request's `vae_tiling` option (genaccel.memory.offload; it changes pixels slightly at tile seams), so it is
   not repeated here.

LightCache takes no slot: it stacks with every accelerator. Its chunking hooks go innermost on each
feed-forward (`apply_inner`: token merging around the feed-forward sees the whole sequence) and its swapping
hooks around every other accelerator's (`apply_outer`). The movers keep the CUDA code in one place
(`CudaMover`: side stream, events, pinned buffers) apart from the logic, which a `SyncMover` (plain
synchronous copies, CPU included) exercises anywhere: tests set `LightCache.mover`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accelerators.base import Accelerator, AcceleratorConfig, param
from genaccel.accelerators.state import map_state
from genaccel.attention.layouts import LAYOUTS

FFN_HOOK = "genaccel_lightcache_ffn"
SWAP_HOOK = "genaccel_lightcache_swap"
WAIT_HOOK = "genaccel_lightcache_wait"
OFFLOAD_MODES = ("auto", "on", "off")


# ------------------------------------------------------------------------ config
@dataclass
class LightCacheConfig(AcceleratorConfig):
    offload: str = param(
        "auto",
        "keep the other accelerators' cache state in CPU memory between the transformer calls that use it, "
        "copied back ahead of use: auto (when the state is on CUDA: pinned memory, side stream), "
        "on (also from other accelerator devices, synchronously), off",
    )
    ffn_chunks: int = param(
        0,
        "run each block's feed-forward over the token sequence in this many chunks, to cut "
        "its activation peak (0: off)",
    )

    def validate(self):
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not '{self.offload}'")
        if self.ffn_chunks < 0:
            raise ValueError("ffn_chunks must be >= 0")


# ------------------------------------------------------------------------ movers
class SyncMover:
    """Copies state to a storage device and back synchronously (any devices; CPU to CPU copies too)."""

    def __init__(self, storage="cpu"):
        self.storage = torch.device(storage)

    def store(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.storage, copy=True)

    def fetch(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        return tensor.to(device, copy=True)

    def issued(self) -> None:
        """Every fetch of a batch is issued."""

    def ready(self) -> None:
        """Make the computation wait until the issued fetches have landed (here: they have)."""


class CudaMover:
    """Copies state between one CUDA device and pinned CPU memory on a side stream.

    A store waits for the compute stream (the state was just computed), copies out on the side stream and
    marks the device tensor used there, so its memory is reused only after the copy. A fetch copies into a
    tensor allocated on the side stream, marked used by the compute stream; `issued` records an event after
    a batch of fetches, and `ready` makes the compute stream wait on it before the state is read.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._event: torch.cuda.Event | None = None

    def store(self, tensor: torch.Tensor) -> torch.Tensor:
        compute = torch.cuda.current_stream(tensor.device)
        self.stream.wait_stream(compute)
        with torch.cuda.stream(self.stream):
            host = torch.empty_like(tensor, device="cpu", pin_memory=True)
            host.copy_(tensor, non_blocking=True)
        tensor.record_stream(self.stream)
        return host

    def fetch(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            back = torch.empty_like(tensor, device=device)
            back.copy_(tensor, non_blocking=True)
        back.record_stream(torch.cuda.current_stream(back.device))
        return back

    def issued(self) -> None:
        self._event = self.stream.record_event()

    def ready(self) -> None:
        if self._event is not None:
            torch.cuda.current_stream(self.device).wait_event(self._event)
            self._event = None


# ------------------------------------------------------------------------ hooks
class FeedForwardChunkHook(ModelHook):
    """Innermost on a block's feed-forward: runs it over the tokens (dim -2) in chunks, concatenated."""

    def __init__(self, accelerator: "LightCache"):
        super().__init__()
        self.accel = accelerator

    def new_forward(self, module, *args, **kwargs):
        chunks = self.accel.config.ffn_chunks
        positional = bool(args)
        hidden = args[0] if positional else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor) or hidden.dim() < 3 or hidden.shape[-2] < 2 or chunks < 2:
            return self.fn_ref.original_forward(*args, **kwargs)
        outputs = []
        for part in hidden.tensor_split(min(chunks, hidden.shape[-2]), dim=-2):
            if positional:
                outputs.append(self.fn_ref.original_forward(part, *args[1:], **kwargs))
            else:
                outputs.append(self.fn_ref.original_forward(*args, **{**kwargs, "hidden_states": part}))
        self.accel.ffn_chunked_calls += 1
        return torch.cat(outputs, dim=-2)


class SwapHook(ModelHook):
    """On a denoiser, around every other accelerator's hooks (inside the step tracker, so the CFG branch
    is known): brings this branch's cache state back before the call, sends it out after."""

    def __init__(self, accelerator: "LightCache", hooks: list[ModelHook], hosts_state: bool):
        super().__init__()
        self.accel = accelerator
        self.hooks = hooks  # the other accelerators' hooks on this denoiser, whose state is swapped
        self.hosts_state = hosts_state  # other accelerators' hooks sit on the denoiser itself: wait at once

    def pre_forward(self, module, *args, **kwargs):
        self.accel.prefetch(self.hooks)
        if self.hosts_state:
            self.accel.ready()
        return args, kwargs

    def post_forward(self, module, output):
        self.accel.offload(self.hooks)
        return output


class WaitHook(ModelHook):
    """Outermost on a module holding another accelerator's hook: the state is read only once it is back."""

    def __init__(self, accelerator: "LightCache"):
        super().__init__()
        self.accel = accelerator

    def pre_forward(self, module, *args, **kwargs):
        self.accel.ready()
        return args, kwargs


# ------------------------------------------------------------------------ accelerator
class LightCache(Accelerator):
    name = "lightcache"
    summary = "memory-lean caching: other caches' state in CPU memory between uses, chunked feed-forward (LightCache)"
    config_class = LightCacheConfig
    slots = frozenset()

    # Tests (and callers with a special device) may set a mover used for every state tensor it has not
    # stored yet, whatever its device; None picks one per tensor (see `_mover_for`).
    mover: SyncMover | CudaMover | None = None

    @classmethod
    def estimated_state_bytes(cls, config, shape) -> int:
        """Keeps no state of its own."""
        return 0

    def __init__(self, config: LightCacheConfig, family, runtime):
        super().__init__(config, family, runtime)
        # id(stored tensor) -> (weak reference to it, device it came from, mover). Weak: when a hook's state
        # lets a stored tensor go (a reset), its entry goes too.
        self._stored: dict[int, tuple[weakref.ref, torch.device, object]] = {}
        self._cuda_movers: dict[torch.device, CudaMover] = {}
        self._sync = SyncMover("cpu")
        self._pending: list = []  # movers with fetches issued and not yet waited for
        self.ffn_modules = 0
        self.reset()

    def reset(self):
        self.offloaded_bytes = 0
        self.prefetched_bytes = 0
        self.prefetches = 0
        self.ffn_chunked_calls = 0

    def on_generation_start(self):
        self._pending.clear()

    # -- installation
    def apply(self, denoiser):
        """Nothing in spec order: see `apply_inner` and `apply_outer`."""

    def apply_inner(self, denoiser):
        if self.config.ffn_chunks < 2:
            return
        layout = LAYOUTS.get(self.family.name)
        attribute = layout.ffn if layout is not None else "ff"
        if not attribute:
            return
        for _, block in self.family.blocks(denoiser):
            feed_forward = getattr(block, attribute, None)
            if isinstance(feed_forward, torch.nn.Module):
                registry = HookRegistry.check_if_exists_or_initialize(feed_forward)
                registry.register_hook(FeedForwardChunkHook(self), FFN_HOOK)
                self.ffn_modules += 1

    def apply_outer(self, denoiser, accelerators):
        if self.config.offload == "off":
            return
        inside = {id(m) for m in denoiser.modules()}
        hosts: dict[int, torch.nn.Module] = {}
        hooks: list[ModelHook] = []
        for other in accelerators:
            if other is self:
                continue
            for module, name in other.ledger.entries():
                if id(module) in inside:
                    hosts.setdefault(id(module), module)
                    hooks.append(module._diffusers_hook.hooks[name])
        if not hooks:  # nothing else on this denoiser keeps state
            return
        for module in hosts.values():
            if module is not denoiser:
                HookRegistry.check_if_exists_or_initialize(module).register_hook(WaitHook(self), WAIT_HOOK)
        swap = SwapHook(self, hooks, hosts_state=id(denoiser) in hosts)
        HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(swap, SWAP_HOOK)

    # -- swapping
    def _mover_for(self, tensor: torch.Tensor):
        if self.mover is not None:
            return self.mover
        if tensor.device.type == "cuda" and torch.cuda.is_available():
            mover = self._cuda_movers.get(tensor.device)
            if mover is None:
                mover = self._cuda_movers[tensor.device] = CudaMover(tensor.device)
            return mover
        if self.config.offload == "on" and tensor.device.type not in ("cpu", "meta"):
            return self._sync
        return None  # auto off CUDA, or already in host memory

    def _remember(self, stored: torch.Tensor, home: torch.device, mover) -> None:
        key = id(stored)
        stored_map = self._stored

        def forget(ref, key=key):
            entry = stored_map.get(key)
            if entry is not None and entry[0] is ref:
                del stored_map[key]

        stored_map[key] = (weakref.ref(stored, forget), home, mover)

    @torch.compiler.disable
    def offload(self, hooks: list[ModelHook]) -> None:
        """Send the current branch's state in `hooks` (and state kept for all branches) to storage."""
        moved = 0

        def out(t):
            nonlocal moved
            entry = self._stored.get(id(t))
            if entry is not None and entry[0]() is t:
                return t
            mover = self._mover_for(t)
            if mover is None:
                return t
            stored = mover.store(t)
            self._remember(stored, t.device, mover)
            moved += t.numel() * t.element_size()
            return stored

        map_state(hooks, out, self.runtime.branch)
        self.offloaded_bytes += moved

    @torch.compiler.disable
    def prefetch(self, hooks: list[ModelHook]) -> None:
        """Issue the copies of the current branch's stored state in `hooks` back to where it was computed."""
        if not self._stored:
            return
        fetched = 0
        movers = []

        def back(t):
            nonlocal fetched
            entry = self._stored.get(id(t))
            if entry is None or entry[0]() is not t:
                return t
            del self._stored[id(t)]
            _, home, mover = entry
            if mover not in movers:
                movers.append(mover)
            fetched += t.numel() * t.element_size()
            return mover.fetch(t, home)

        map_state(hooks, back, self.runtime.branch)
        for mover in movers:
            mover.issued()
        self._pending.extend(m for m in movers if m not in self._pending)
        if fetched:
            self.prefetches += 1
            self.prefetched_bytes += fetched

    def ready(self) -> None:
        """Make the computation wait for the fetches issued (once per batch)."""
        if self._pending:
            for mover in self._pending:
                mover.ready()
            self._pending.clear()

    def stored_tensors(self) -> list[torch.Tensor]:
        """The state tensors now in storage."""
        return [t for t in (entry[0]() for entry in list(self._stored.values())) if t is not None]

    def stats(self):
        return {
            "offloaded_bytes": self.offloaded_bytes,
            "prefetched_bytes": self.prefetched_bytes,
            "prefetches": self.prefetches,
            "ffn_chunks": self.config.ffn_chunks,
            "ffn_chunked_calls": self.ffn_chunked_calls,
        }
