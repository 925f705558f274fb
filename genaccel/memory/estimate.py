"""Peak memory of one generation, estimated before it runs, from the model's sizes and the request.

A generation has three phases, and its peak is the largest of them: encoding the prompt, denoising,
decoding the video. Each phase holds the weights resident on the device in that phase (all of them
without offloading; under `genaccel.memory.offload`'s modes only the running component, block or layer)
plus what the phase computes:

- denoising: the activations of one transformer block at the request's token count (the feed-forward
  peak: two tensors of the feed-forward width and five of the hidden width per token, the rotary
  tables, a few latent-sized tensors), times the CFG batch, plus the state the chosen accelerators
  keep between passes (`Accelerator.estimated_state_bytes`);
- decoding: the VAE decoder's working set (feature maps of its full-resolution width over one decoded
  chunk, or one tile with VAE tiling) plus copies of the decoded video, then the post-processing
  copies of the video.

The estimate counts tensors, like `torch.cuda.max_memory_allocated`: not the interpreter, the libraries,
the CUDA context or allocator caching. BENCHMARKS.md compares it with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GB = 1e9
# Decoder feature maps of the full-resolution width live at once while one chunk decodes. Measured once
# with Wan's VAE at 64x64x17 (11.5 maps); BENCHMARKS.md checks it at two other sizes.
DECODE_WORKING_MAPS = 11.5
# Copies of the video alive while it is post-processed into frames: float32 on the CPU (the VAE output,
# its rescaled copy, the numpy frames), in the VAE's dtype on an accelerator (then copied to the host).
POSTPROCESS_COPIES = {"cpu": 3.5, "cuda": 2.0}
# Latent frames a VAE decodes at a time (its feature cache carries the rest); others decode all at once.
DECODE_CHUNK_LATENT_FRAMES = {"AutoencoderKLWan": 1, "AutoencoderKLCogVideoX": 2}
# Pipeline attributes holding the VAE's compression, by the names the families use.
SPATIAL_FACTOR_ATTRS = (
    "vae_scale_factor_spatial",
    "vae_spatial_compression_ratio",
    "vae_spatial_scale_factor",
    "vae_scale_factor",
)
TEMPORAL_FACTOR_ATTRS = ("vae_scale_factor_temporal", "vae_temporal_compression_ratio", "vae_temporal_scale_factor")


@dataclass(frozen=True)
class ComponentSize:
    """Bytes of one pipeline component's weights, and of the parts offloading moves one at a time."""

    total: int
    largest_block: int  # one element of its block lists (0 without block lists)
    outside_blocks: int  # everything not in a block list
    largest_leaf: int  # one module without children

    @classmethod
    def of(cls, module: torch.nn.Module) -> "ComponentSize":
        def size(m, recurse=True):
            return sum(t.numel() * t.element_size() for t in (*m.parameters(recurse), *m.buffers(recurse)))

        blocks = [
            size(block) for child in module.children() if isinstance(child, torch.nn.ModuleList) for block in child
        ]
        total = size(module)
        return cls(
            total,
            max(blocks, default=0),
            total - sum(blocks),
            max((size(m, False) for m in module.modules()), default=0),
        )

    def resident(self, offload: str, prefetch: bool) -> int:
        """Bytes on the device while this component runs under `offload`."""
        if offload in ("none", "model"):
            return self.total
        if offload == "group" and self.largest_block:  # block-level groups, the next one prefetched on CUDA
            return self.outside_blocks + self.largest_block * (2 if prefetch else 1)
        return self.largest_leaf * (2 if prefetch and offload == "group" else 1)


@dataclass(frozen=True)
class ActivationShape:
    """The sizes an accelerator's state scales with, for one generation (see `Accelerator.estimated_state_bytes`)."""

    tokens: int  # per transformer pass, per batch element
    frame_tokens: int  # tokens of one latent frame
    dim: int  # hidden width
    self_attention_layers: int
    cross_attention_layers: int
    branches: int  # CFG branches whose state is kept apart
    dtype_bytes: int
    latent_bytes: int  # one latent tensor

    @property
    def hidden_bytes(self) -> int:
        """One hidden-state tensor of a pass (tokens x width)."""
        return self.tokens * self.dim * self.dtype_bytes


@dataclass(frozen=True)
class ModelSizes:
    """What the estimate needs to know about a model, read from its modules (real, or on the meta device)."""

    components: dict[str, ComponentSize]
    denoisers: tuple[str, ...]
    dim: int
    ffn_dim: int
    head_dim: int
    self_attention_layers: int
    cross_attention_layers: int
    latent_channels: int
    patch: tuple[int, int, int]  # frames, height, width
    vae_factors: tuple[int, int]  # temporal, spatial
    decoder_width: float  # channels of the decoder's last feature maps per output pixel
    decode_chunk_frames: int | None  # latent frames per decoded chunk; None: all
    tile: tuple[int, int] | None  # the VAE's tile in pixels when tiling, None without tiling support
    dtype_bytes: int  # of the denoiser's activations
    vae_dtype_bytes: int
    cfg_batched: bool

    @classmethod
    def of(cls, pipe, family=None) -> "ModelSizes":
        """Sizes of a loaded pipeline (weights anywhere, the meta device included)."""
        from genaccel.pipelines.families import family_of

        family = family or family_of(pipe)
        components = {
            name: ComponentSize.of(module)
            for name, module in pipe.components.items()
            if isinstance(module, torch.nn.Module)
        }
        denoiser_items = family.denoiser_modules(pipe)
        transformer = denoiser_items[0][1]
        attention = family.attention_layers(transformer, "self")[0][1]
        linears = [m for m in family.blocks(transformer)[0][1].modules() if isinstance(m, torch.nn.Linear)]
        dim = attention.to_q.in_features
        heads = getattr(attention, "heads", 1) or 1
        config = transformer.config
        patch = config.get("patch_size", 1)
        patch = tuple(patch) if isinstance(patch, (list, tuple)) else (config.get("patch_size_t") or 1, patch, patch)
        vae = pipe.vae
        convs = (
            [m for m in vae.decoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
            if hasattr(vae, "decoder")
            else []
        )
        tile = None
        if hasattr(vae, "enable_tiling"):
            tile = (
                getattr(vae, "tile_sample_min_height", None) or getattr(vae, "tile_sample_min_size", 256),
                getattr(vae, "tile_sample_min_width", None) or getattr(vae, "tile_sample_min_size", 256),
            )
        return cls(
            components=components,
            denoisers=tuple(name for name, _ in denoiser_items),
            dim=dim,
            ffn_dim=max((m.out_features for m in linears if m.in_features == dim), default=4 * dim),
            head_dim=dim // heads,
            self_attention_layers=len(family.attention_layers(transformer, "self")),
            cross_attention_layers=len(family.attention_layers(transformer, "cross")),
            latent_channels=config.get("in_channels", 16),
            patch=patch,
            vae_factors=(_first_attr(pipe, TEMPORAL_FACTOR_ATTRS, 1), _first_attr(pipe, SPATIAL_FACTOR_ATTRS, 8)),
            decoder_width=(convs[-1].in_channels if convs else 128) / _vae_patch_pixels(vae),
            decode_chunk_frames=DECODE_CHUNK_LATENT_FRAMES.get(type(vae).__name__),
            tile=tile,
            dtype_bytes=next(transformer.parameters()).element_size(),
            vae_dtype_bytes=next(vae.parameters()).element_size(),
            cfg_batched=family.cfg == "batched",
        )


def _vae_patch_pixels(vae) -> int:
    """Output pixels per position of the decoder's last feature map: a VAE that unpatchifies its output
    (LTX-Video's, Wan 2.2's) runs its last layers at 1/patch of the resolution."""
    patch = vae.config.get("patch_size") or 1
    patch_t = vae.config.get("patch_size_t") or 1
    return patch * patch * patch_t if isinstance(patch, int) else 1


def _first_attr(obj, names, default: int) -> int:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of one generation, by phase and by kind."""

    peak: int
    phases: dict[str, int]  # encode, denoise, decode
    weights: int  # resident at the peak
    activations: int  # denoising activations
    state: int  # accelerators' state
    decode: int  # decode and post-processing working set
    device: str
    offload: str
    vae_tiling: bool

    def to_dict(self) -> dict:
        return {
            "peak_bytes": self.peak,
            "phases": self.phases,
            "weights_bytes": self.weights,
            "activation_bytes": self.activations,
            "accelerator_state_bytes": self.state,
            "decode_bytes": self.decode,
            "device": self.device,
            "offload": self.offload,
            "vae_tiling": self.vae_tiling,
        }

    def describe(self) -> str:
        """One line: the peak and what it is made of."""
        phase = max(self.phases, key=self.phases.get)
        return (
            f"about {size_text(self.peak)} on {self.device}, at the {phase} (weights resident "
            f"{size_text(self.weights)}; denoising activations {size_text(self.activations)}, accelerator state "
            f"{size_text(self.state)}, decode {size_text(self.decode)})"
        )


def size_text(n: int) -> str:
    """Bytes as a short decimal size ("1.23 GB", "45.6 MB")."""
    return f"{n / GB:.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:.1f} MB"


def activation_shape(
    sizes: ModelSizes, num_frames: int, height: int, width: int, guidance_scale: float, shards: int = 1
) -> ActivationShape:
    t, s = sizes.vae_factors
    pt, ph, pw = sizes.patch
    latent_frames = (num_frames - 1) // t + 1 if t > 1 else num_frames
    lh, lw = height // s, width // s
    frame_tokens = max(1, lh // ph) * max(1, lw // pw)
    branches = 2 if guidance_scale > 1 else 1
    return ActivationShape(
        tokens=-(-latent_frames // pt) * frame_tokens // shards,
        frame_tokens=frame_tokens,
        dim=sizes.dim,
        self_attention_layers=sizes.self_attention_layers,
        cross_attention_layers=sizes.cross_attention_layers,
        branches=branches,
        dtype_bytes=sizes.dtype_bytes,
        latent_bytes=sizes.latent_channels * latent_frames * lh * lw * 4,
    )


def estimate_peak(
    sizes: ModelSizes,
    *,
    num_frames: int,
    height: int,
    width: int,
    guidance_scale: float = 1.0,
    accelerators=(),
    offload: str = "none",
    vae_tiling: bool = False,
    device: str = "cpu",
    shards: int = 1,
) -> MemoryEstimate:
    """The estimated peak of one generation on one device. `accelerators` are (class, config) pairs of a
    resolved spec; `device` is a device type ("cpu", "cuda"): on the CPU the weights are resident whatever
    `offload` says; `shards` is the number of processes the sequence is split across (context parallelism:
    each holds its share of the tokens, and the whole video when it decodes)."""
    shape = activation_shape(sizes, num_frames, height, width, guidance_scale, shards)
    mode = offload if device != "cpu" else "none"
    prefetch = device == "cuda"

    def resident(active: tuple[str, ...]) -> int:
        if mode == "none":
            return sum(c.total for c in sizes.components.values())
        return max(
            (sizes.components[name].resident(mode, prefetch) for name in active if name in sizes.components), default=0
        )

    batch = 2 if sizes.cfg_batched and shape.branches == 2 else 1
    per_token = sizes.dtype_bytes * (2 * sizes.ffn_dim + 5 * sizes.dim) + 2 * sizes.head_dim * 4  # + fp32 rope
    activations = batch * shape.tokens * per_token + 4 * batch * shape.latent_bytes
    state = sum(cls.estimated_state_bytes(config, shape) for cls, config in accelerators)

    t, _ = sizes.vae_factors
    video = 3 * num_frames * height * width * sizes.vae_dtype_bytes
    chunk_frames = num_frames if sizes.decode_chunk_frames is None else min(num_frames, sizes.decode_chunk_frames * t)
    tiled = vae_tiling and sizes.tile is not None
    tile_h, tile_w = (min(height, sizes.tile[0]), min(width, sizes.tile[1])) if tiled else (height, width)
    maps = DECODE_WORKING_MAPS * sizes.decoder_width * chunk_frames * tile_h * tile_w * sizes.vae_dtype_bytes
    copies = 3 if tiled and (tile_h, tile_w) != (height, width) else 2  # tiles, then blended
    post = (
        POSTPROCESS_COPIES.get(device, 2.0)
        * 3
        * num_frames
        * height
        * width
        * (4 if device == "cpu" else sizes.vae_dtype_bytes)
    )
    decode = int(max(maps + copies * video, post))

    encode_weights = resident(("text_encoder", "text_encoder_2"))
    denoise_weights = resident(sizes.denoisers)
    decode_weights = resident(("vae",))
    phases = {
        "encode": encode_weights,
        "denoise": denoise_weights + int(activations) + state,
        "decode": decode_weights + decode + state,
    }
    peak_phase = max(phases, key=phases.get)
    weights = {"encode": encode_weights, "denoise": denoise_weights, "decode": decode_weights}[peak_phase]
    return MemoryEstimate(
        peak=phases[peak_phase],
        phases=phases,
        weights=weights,
        activations=int(activations),
        state=state,
        decode=decode,
        device=device,
        offload=mode,
        vae_tiling=vae_tiling,
    )


# ----------------------------------------------------------------------------- fitting a device
def device_budget(pipe, device: torch.device) -> int:
    """Bytes a run may use on `device`: what is free there plus what this pipeline already holds there."""
    held = sum(
        t.numel() * t.element_size()
        for module in pipe.components.values()
        if isinstance(module, torch.nn.Module)
        for t in (*module.parameters(), *module.buffers())
        if t.device.type == device.type
    )
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # PyTorch's, reusable
        return int(free) + int(cached) + held
    import psutil

    return int(psutil.virtual_memory().available) + held


# What to try, in order, when a run does not fit: each option's flag and the request fields it sets.
REMEDIES = (
    ("--vae-tiling", {"vae_tiling": True}),
    ("--offload model", {"offload": "model"}),
    ("--offload model --vae-tiling", {"offload": "model", "vae_tiling": True}),
    ("--offload group", {"offload": "group"}),
    ("--offload group --vae-tiling", {"offload": "group", "vae_tiling": True}),
    ("--offload sequential", {"offload": "sequential"}),
    ("--offload sequential --vae-tiling", {"offload": "sequential", "vae_tiling": True}),
)


def fit_message(estimate: MemoryEstimate, budget: int, alternatives: dict[str, MemoryEstimate]) -> str:
    """One line saying that a run does not fit and which option would make it fit (the first of
    `alternatives`, in REMEDIES order, whose estimate is under `budget`)."""
    head = f"this run needs {estimate.describe()}, more than the {size_text(budget)} it may use"
    for flag, alternative in alternatives.items():
        if alternative.peak <= budget:
            return f"{head}: {flag} brings it to about {size_text(alternative.peak)}"
    smallest = min(alternatives.values(), key=lambda e: e.peak, default=estimate)
    return (
        f"{head}, and even with offloading and VAE tiling it needs about {size_text(smallest.peak)}: make "
        "fewer or smaller frames (--frames, --height, --width)"
    )
