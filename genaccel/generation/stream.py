"""The streaming generator: a causal video model run chunk by chunk, each chunk yielded as soon as it is made.

    pipe = genaccel.load_pipeline("tiny-causal")
    for chunk in genaccel.stream(pipe, "a red circle moving left on a black background", chunks=20):
        show(chunk.frames)                       # (F, H, W, 3) float32 in [0, 1]

Per chunk of latent frames: a few denoising steps in which the chunk attends to the rolling KV cache of
earlier chunks (the `kvcache` accelerator) and to itself; then one pass over the clean chunk at timestep 0
that commits its keys/values to the cache; then the chunk is decoded with the VAE's causal feature cache
carried over (or, with `decoder=light`, the light decoder's frame memory), and yielded. Memory and time per chunk stay flat: the cache keeps a sink and a window, the
decoder a few frames. A prompt switch (`prompts_at`) re-computes the cached frames' keys/values under the
new prompt (KV re-cache), so the scene changes smoothly. Chunk boundaries are declared to the runtime
(`Acceleration.begin_chunk`), and the request goes through the same `prepare` step as every other path.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from genaccel.engine.acceleration import Acceleration
from genaccel.errors import InputError, ModelError
from genaccel.generation.prepare import PreparedRequest, install_prepared, prepare
from genaccel.generation.request import GenerationRequest, request_from_options
from genaccel.memory.offload import place
from genaccel.streaming.decode import StreamingDecoder
from genaccel.streaming.kv_cache import kept_frames


@dataclass
class StreamChunk:
    """One chunk of a stream, as yielded."""

    index: int  # 0-based chunk number
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1]
    first_frame: int  # index of frames[0] in the whole video
    prompt: str
    seconds: float  # this chunk, start to yield
    denoise_seconds: float  # denoising steps and the commit pass
    decode_seconds: float
    memory_bytes: int  # state the stream carries: KV cache, latent history, decoder cache
    rss_bytes: int  # the process's resident memory after the chunk (0 where unknown)
    cached_frames: list[int] = field(default_factory=list)  # latent frames the KV cache holds
    recached: bool = False  # the prompt changed here and the cache was re-computed under it

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no frames)."""
        return {
            "chunk": self.index,
            "frames": int(len(self.frames)),
            "first_frame": self.first_frame,
            "prompt": self.prompt,
            "seconds": round(self.seconds, 4),
            "denoise_seconds": round(self.denoise_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 4),
            "memory": self.memory_bytes,
            "rss": self.rss_bytes,
            "cached_frames": self.cached_frames,
            "recached": self.recached,
        }


@dataclass(frozen=True)
class StreamSettings:
    """How a model streams: from the [stream] table of its genaccel.toml."""

    chunk_frames: int  # latent frames per chunk
    window: int  # default KV cache window (latent frames)
    sink: int  # default KV cache sink (latent frames)
    # Few-step distilled models (Self-Forcing, CausVid) denoise at fixed timesteps: predict the clean chunk,
    # re-noise it to the next timestep. None: the pipeline's scheduler with the request's step count.
    timesteps: tuple[float, ...] | None = None
    shift: float = 1.0  # flow shift applied to `timesteps`

    @classmethod
    def of(cls, pipe) -> "StreamSettings":
        table = getattr(pipe, "_genaccel_stream", None)
        if not table:
            key = getattr(pipe, "_genaccel_model_key", type(pipe).__name__)
            raise ModelError(
                f"model '{key}' is not a causal streaming model (its genaccel.toml has no [stream] "
                "table); stream with tiny-causal or a converted causal checkpoint"
            )
        timesteps = table.get("timesteps")
        return cls(
            int(table.get("chunk_frames", 1)),
            int(table.get("window", 4)),
            int(table.get("sink", 1)),
            tuple(float(t) for t in timesteps) if timesteps else None,
            float(table.get("shift", 1.0)),
        )

    def sigmas(self) -> list[float]:
        """Noise levels of the fixed timesteps after the flow shift."""
        return [self.shift * t / (1 + (self.shift - 1) * t) for t in (t / 1000 for t in self.timesteps)]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def parse_prompt_switches(items, chunks: int | None = None) -> dict[int, str]:
    """`CHUNK:TEXT` strings (or (chunk, text) pairs) -> {chunk: prompt}; InputError on a bad one."""
    switches: dict[int, str] = {}
    for item in items or ():
        if isinstance(item, str):
            head, sep, text = item.partition(":")
            if not sep or not head.strip().isdigit():
                raise InputError(f"--prompt-at expects CHUNK:TEXT with CHUNK a whole number; got '{item}'")
            chunk = int(head)
        else:
            chunk, text = item
        text = str(text).strip()
        if not text:
            raise InputError(f"--prompt-at {chunk}: the prompt is empty")
        if chunk < 1:
            raise InputError(f"--prompt-at {chunk}: prompt switches start at chunk 1 (chunk 0 uses the main prompt)")
        if chunks is not None and chunk >= chunks:
            raise InputError(f"--prompt-at {chunk}: the stream has only {chunks} chunks (0..{chunks - 1})")
        if chunk in switches:
            raise InputError(f"--prompt-at {chunk}: given twice")
        switches[chunk] = text
    return switches


def prepare_stream(
    pipe, request: GenerationRequest | str, *, window: int | None = None, sink: int | None = None, **options
) -> PreparedRequest:
    """The one preparation step for a stream: `prepare` (defaults, checks, the spec) with the rolling KV
    cache added to the request's accelerators (or its window/sink set where the spec has one)."""
    settings = StreamSettings.of(pipe)
    if isinstance(request, str):
        request = request_from_options({"prompt": request, **options})
    elif options:
        request = request_from_options(options, request)
    for name, value in (("window", window), ("sink", sink)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"--{name} must be a whole number; got {value!r}")
    cache = (
        f"kvcache(window={window if window is not None else settings.window},"
        f"sink={sink if sink is not None else settings.sink})"
    )
    accel = (request.accel or "none").strip()
    if "kvcache" in accel:
        if window is not None or sink is not None:
            raise InputError(
                "give the KV cache's window and sink either in --accel's kvcache(...) or as --window/--sink, not both"
            )
        spec = accel
    else:
        spec = cache if accel == "none" else f"{accel}+{cache}"
    return prepare(pipe, dataclasses.replace(request, accel=spec))


class Stream:
    """An iterator of `StreamChunk`s; `close()` (or leaving a `with` block) ends the stream early."""

    def __init__(
        self, pipe, prepared: PreparedRequest, *, chunks: int | None = None, prompts_at: dict[int, str] | None = None
    ):
        if chunks is not None and chunks < 1:
            raise InputError(f"--chunks must be at least 1; got {chunks}")
        self.pipe = pipe
        self.prepared = prepared
        self.request = prepared.request
        self.settings = StreamSettings.of(pipe)
        self.chunks = chunks
        self.prompts_at = dict(prompts_at or {})
        self.prompt = self.request.prompt
        self._next_prompt: str | None = None
        self._iterator = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> StreamChunk:
        return next(self._iterator)

    def close(self) -> None:
        self._iterator.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def switch_prompt(self, prompt: str) -> None:
        """Change the prompt from the next chunk on (the web UI's box); the cache is re-computed under it."""
        prompt = prompt.strip()
        if not prompt:
            raise InputError("the prompt is empty")
        self._next_prompt = prompt

    # ------------------------------------------------------------------ the loop
    def _embeds(self, prompt: str):
        pipe, request = self.pipe, self.request
        guided = request.guidance_scale is not None and request.guidance_scale > 1.0
        extra = self.prepared.call
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(
                prompt,
                request.negative_prompt or "",
                do_classifier_free_guidance=guided,
                max_sequence_length=extra.get("max_sequence_length", 512),
                device=pipe._execution_device,
            )
        dtype = pipe.transformer.dtype
        return cond.to(dtype), (uncond.to(dtype) if guided else None)

    def _forward(self, latents, timestep, embeds, branch):
        transformer = self.pipe.transformer
        with transformer.cache_context(branch):
            return transformer(
                hidden_states=latents, timestep=timestep, encoder_hidden_states=embeds, return_dict=False
            )[0]

    def _predict(self, latents, timestep, embeds, guidance):
        """The flow prediction, guided when there is an unconditional branch."""
        prediction = self._forward(latents, timestep, embeds[0], "cond")
        if embeds[1] is not None:
            uncond = self._forward(latents, timestep, embeds[1], "uncond")
            prediction = uncond + guidance * (prediction - uncond)
        return prediction

    def _denoise_renoise(self, latents, embeds, guidance, generator):
        """Few-step sampling at fixed noise levels: estimate the clean chunk, re-noise it to the next level."""
        sigmas = self.settings.sigmas()
        for i, sigma in enumerate(sigmas):
            timestep = torch.full((1,), sigma * 1000, device=latents.device)
            clean = latents - sigma * self._predict(latents, timestep, embeds, guidance)
            if i + 1 == len(sigmas):
                return clean
            noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
            latents = (1 - sigmas[i + 1]) * clean + sigmas[i + 1] * noise
        return latents

    def _commit(self, latents, embeds) -> None:
        """One pass over the clean chunk per CFG branch, adding its keys/values to the caches."""
        zero = torch.zeros(latents.shape[0], device=latents.device)
        with ExitStack() as stack, self.acceleration.runtime.full_passes():
            for cache in self.caches:  # one per denoiser
                stack.enter_context(cache.commit_pass())
            for branch, e in zip(("cond", "uncond"), embeds):
                if e is not None:
                    self._forward(latents, zero, e, branch)

    def _run(self) -> Iterator[StreamChunk]:
        pipe, request = self.pipe, self.request
        accel = install_prepared(pipe, self.prepared)
        place(pipe)  # on its device, as genaccel last placed it (a model loaded unplaced: no offloading)
        self.acceleration: Acceleration = accel
        kv = [a for a in accel.accelerators if a.name == "kvcache"]
        if not kv:
            raise ModelError("the stream needs the kvcache accelerator (prepare it with prepare_stream)")
        self.caches = kv[0].caches
        window, sink = kv[0].config.window, kv[0].config.sink
        device = pipe._execution_device
        transformer = pipe.transformer
        cf = self.settings.chunk_frames
        spatial = pipe.vae_scale_factor_spatial
        shape = (1, transformer.config.in_channels, cf, request.height // spatial, request.width // spatial)
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        guidance = request.guidance_scale or 1.0
        light = self.prepared.light  # decoder=light: its memory blocks carry over instead of the VAE's cache
        decoder = light.stream() if light is not None else StreamingDecoder(pipe.vae)
        embeds = self._embeds(self.prompt)
        history: list[torch.Tensor] = []  # clean latent frames the cache holds, in commit order
        first_frame = 0
        scheduler = pipe.scheduler
        with accel.generation(request.setting):
            index = 0
            while self.chunks is None or index < self.chunks:
                with torch.no_grad():  # not held across the yield: the caller keeps its own grad mode
                    start = time.perf_counter()
                    if index:
                        accel.begin_chunk()
                    recached = False
                    new_prompt = self._next_prompt or self.prompts_at.get(index)
                    self._next_prompt = None
                    if new_prompt is not None and new_prompt != self.prompt:
                        self.prompt = new_prompt
                        embeds = self._embeds(new_prompt)
                        for cache in self.caches:
                            cache.clear()
                        for frame in range(0, len(history), cf):  # KV re-cache under the new prompt
                            self._commit(torch.cat(history[frame : frame + cf], dim=2), embeds)
                        recached = True
                    latents = torch.randn(shape, generator=generator).to(device, transformer.dtype)
                    if self.settings.timesteps:
                        latents = self._denoise_renoise(latents, embeds, guidance, generator)
                    else:
                        scheduler.set_timesteps(request.num_inference_steps, device=device)
                        for t in scheduler.timesteps:
                            prediction = self._predict(latents, t.expand(1), embeds, guidance)
                            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
                    self._commit(latents, embeds)
                    history += list(latents.split(1, dim=2))
                    keep = kept_frames(len(history), sink, window)
                    history = [history[i] for i in keep]
                    denoised = time.perf_counter()
                    frames = decoder(latents)
                    done = time.perf_counter()
                    state = (
                        sum(c.nbytes() for c in self.caches)
                        + decoder.nbytes()
                        + sum(h.numel() * h.element_size() for h in history)
                    )
                    chunk = StreamChunk(
                        index,
                        frames,
                        first_frame,
                        self.prompt,
                        done - start,
                        denoised - start,
                        done - denoised,
                        state,
                        _rss_bytes(),
                        self.caches[0].frames("cond") if self.caches else [],
                        recached,
                    )
                yield chunk
                first_frame += len(frames)
                index += 1


def stream(
    pipe,
    request: GenerationRequest | PreparedRequest | str,
    *,
    chunks: int | None = None,
    prompts_at=None,
    window: int | None = None,
    sink: int | None = None,
    **options,
) -> Stream:
    """Stream a video from a causal model: an iterator of `StreamChunk`s (unbounded when `chunks` is None).

    `request`: a prompt (request options as keyword arguments), a `GenerationRequest`, or a
    `PreparedRequest` from `prepare_stream`. `prompts_at`: {chunk: prompt} or ["CHUNK:TEXT", ...] switches.
    `window`/`sink`: the KV cache's, in latent frames (default: the model's).
    """
    if not isinstance(request, PreparedRequest):
        request = prepare_stream(pipe, request, window=window, sink=sink, **options)
    switches = parse_prompt_switches(prompts_at.items() if isinstance(prompts_at, dict) else prompts_at, chunks)
    return Stream(pipe, request, chunks=chunks, prompts_at=switches)
