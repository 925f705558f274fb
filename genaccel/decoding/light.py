"""The light decoder of a pipeline: TAEHV weights bound to its VAE's latents, for whole clips, streams and
previews.

A `LightDecoder` reads the latents a pipeline makes with `output_type="latent"` (the transformer's space:
TAEHV applies no latents_mean/std) in the family's layout and returns frames as genaccel passes them around,
float32 (F, H, W, 3) in [0, 1]. Its weights come from a folder (`config.json` + `model.safetensors`, as the
embedded model ships them in `light_decoder/`) or from a published TAEHV file (.safetensors, or .pth through
torch's weights-only loader), whose decoder shape is read off its tensors (`taehv.config_from_state_dict`)
and checked against the VAE's latent channels and scale factors.

`stream()` gives a chunk-by-chunk decoder carrying each memory block's last frame (what
`genaccel.generation.stream` uses instead of the VAE's causal cache), `preview()` a cheap decode for live
previews: TAEHV's own trick of turning its temporal upsampling off, one frame per latent frame
(`genaccel.generation.preview`). Which decoder a request gets is decided in `genaccel.generation.prepare`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genaccel.decoding.taehv import DecoderMemory, TAEHVConfig, TAEHVDecoder, TGrow, config_from_state_dict

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")
FOLDER_WEIGHTS = "model.safetensors"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch file through the weights-only loader (never pickle)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


class LightDecoder:
    """A TAEHV decoder for one pipeline's latents (`tensor_format`: "BCFHW", or "BFCHW" for CogVideoX)."""

    def __init__(self, net: TAEHVDecoder, tensor_format: str = "BCFHW", source: str = ""):
        self.net = net.eval().requires_grad_(False)
        self.tensor_format = tensor_format
        self.source = source
        self._preview_net: TAEHVDecoder | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        latent_channels: int,
        spatial_scale: int,
        temporal_scale: int,
        trim: str = "causal",
        tensor_format: str = "BCFHW",
    ) -> "LightDecoder":
        """Load a light decoder folder or TAEHV weights file for a VAE of these channels and scale factors.
        Raises ValueError with a one-line reason when the file is unreadable or made for another VAE."""
        path = Path(path)
        if path.is_dir():
            config_file, weights = path / "config.json", path / FOLDER_WEIGHTS
            if not config_file.is_file() or not weights.is_file():
                raise ValueError(f"{path} is not a light decoder folder (config.json and {FOLDER_WEIGHTS})")
            config = TAEHVConfig.from_dict(json.loads(config_file.read_text()))
            state = read_weights(weights)
        elif path.is_file():
            if path.suffix not in WEIGHTS_SUFFIXES:
                raise ValueError(f"{path.name}: TAEHV weights are .safetensors or .pth")
            try:
                state = read_weights(path)
            except Exception as exc:  # a truncated or foreign file: one line, not a traceback
                raise ValueError(f"{path.name} is not a readable weights file ({type(exc).__name__})") from None
            state = {k: v for k, v in state.items() if k.startswith("decoder.")}
            config = config_from_state_dict(state, spatial_scale, trim)
        else:
            raise ValueError(f"{path} does not exist")
        if config.latent_channels != latent_channels:
            raise ValueError(
                f"{path.name} decodes {config.latent_channels}-channel latents; this VAE makes {latent_channels}"
            )
        if config.s_upscale != spatial_scale or config.t_upscale != temporal_scale:
            raise ValueError(
                f"{path.name} scales space by {config.s_upscale} and time by {config.t_upscale}; this VAE by "
                f"{spatial_scale} and {temporal_scale}"
            )
        net = TAEHVDecoder(config)
        try:
            net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        except RuntimeError:
            raise ValueError(f"{path.name}: its tensors do not match a TAEHV decoder of that shape") from None
        return cls(net, tensor_format, str(path))

    def to(self, device) -> "LightDecoder":
        self.net.to(device)
        if self._preview_net is not None:
            self._preview_net.to(device)
        return self

    @property
    def config(self) -> TAEHVConfig:
        return self.net.config

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.net.parameters())

    def _ntchw(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents[:1] if latents.ndim == 5 else latents[None]
        if self.tensor_format == "BCFHW":
            latents = latents.transpose(1, 2)
        device = next(self.net.parameters()).device
        return latents.to(device, torch.float32)

    @staticmethod
    def _frames(video: torch.Tensor) -> np.ndarray:
        return video[0].permute(0, 2, 3, 1).float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """A pipeline's latent output (batch item 0) -> float32 frames (F, H, W, 3) in [0, 1]."""
        return self._frames(self.net(self._ntchw(latents)))

    @torch.inference_mode()
    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """A cheap look at latents: one frame per latent frame, at full size (temporal upsampling off)."""
        if self._preview_net is None:
            self._preview_net = _without_time_upscale(self.net)
        return self._frames(self._preview_net(self._ntchw(latents)))

    def stream(self) -> "LightStreamDecoder":
        return LightStreamDecoder(self)


class LightStreamDecoder:
    """Decodes a stream chunk by chunk with the light decoder, its memory carried (StreamingDecoder's API)."""

    def __init__(self, light: LightDecoder):
        self.light = light
        self.reset()

    def reset(self) -> None:
        """Start a new stream: the next chunk is decoded as the clip's first."""
        self.memory = DecoderMemory()

    def nbytes(self) -> int:
        return self.memory.nbytes()

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """(1, C, f, h, w) latents -> float32 frames (F, H, W, 3) in [0, 1]."""
        light = self.light
        return light._frames(light.net(light._ntchw(latents), self.memory))


def _without_time_upscale(net: TAEHVDecoder) -> TAEHVDecoder:
    """The same decoder with its temporal grows turned off: each keeps its last frame's output channels."""
    config = net.config
    cheap = TAEHVDecoder(TAEHVConfig(**{**config.__dict__, "time_upscale": (False, False, False)}))
    state = net.state_dict()
    for index, layer in enumerate(net.decoder):
        if isinstance(layer, TGrow) and layer.stride > 1:
            key = f"decoder.{index}.conv.weight"
            state[key] = state[key][-state[key].shape[1] :]
    cheap.load_state_dict(state)
    weight = next(net.parameters())
    return cheap.to(weight.device, weight.dtype).eval().requires_grad_(False)


LIGHT = "light"
SHIPPED_FOLDER = "light_decoder"  # a model folder's light decoder (the embedded model ships one)


def parse_decoder(text: str) -> tuple[str, str | None]:
    """("full", None), ("light", None) or ("light", PATH) from a request's `decoder` value."""
    kind, _, path = text.partition(":")
    if kind not in ("full", LIGHT) or (kind == "full" and path) or (_ and not path.strip()):
        raise ValueError("must be full, light, or light:PATH")
    return kind, path.strip() or None


def check_decoder_path(decoder: str) -> None:
    """ValueError when a `light:PATH` value names no weights file or light decoder folder."""
    _, path = parse_decoder(decoder)
    if path is None:
        return
    where = Path(path).expanduser()
    if not where.exists():
        raise ValueError(f"{path} does not exist")
    if where.is_file() and where.suffix not in WEIGHTS_SUFFIXES:
        raise ValueError(f"{where.name} is not a weights file ({', '.join(WEIGHTS_SUFFIXES)})")


def _vae_facts(pipe) -> tuple[int, int, int]:
    """Latent channels and the space and time scale factors of a pipeline's VAE."""
    config = pipe.vae.config
    channels = getattr(config, "z_dim", None) or getattr(config, "latent_channels", None)
    return int(channels), int(pipe.vae_scale_factor_spatial), int(pipe.vae_scale_factor_temporal)


def light_decoder_for(pipe, family, decoder: str, *, for_preview: bool = False) -> LightDecoder | None:
    """The light decoder a request's `decoder` value names for `pipe`, loaded once per pipeline and source.

    "full" gives None, except `for_preview`: then the model's shipped light decoder where it has one (previews
    are light decodes whatever decodes the video). Raises InputError with the reason a decoder cannot be had.
    """
    from genaccel.errors import InputError

    kind, path = parse_decoder(decoder)
    if kind == "full" and not for_preview:
        return None
    if not family.light_decoders:
        raise InputError(
            f"{family.title} has no light decoder (TAEHV decoders exist for Wan, HunyuanVideo and CogVideoX)"
        )
    if path is None:
        shipped = getattr(pipe, "_genaccel_light_decoder_dir", None)
        if shipped is None:
            if kind == "full":
                return None
            raise InputError(
                f"this model ships no light decoder: give TAEHV weights with --decoder light:PATH "
                f"({family.light_decoders})"
            )
        path = str(shipped)
    cache = getattr(pipe, "_genaccel_light_decoders", None)
    if cache is None:
        cache = pipe._genaccel_light_decoders = {}
    if path not in cache:
        channels, spatial, temporal = _vae_facts(pipe)
        try:
            light = LightDecoder.load(
                Path(path).expanduser(),
                latent_channels=channels,
                spatial_scale=spatial,
                temporal_scale=temporal,
                trim=family.light_decoder_trim,
                tensor_format=family.tensor_format,
            )
        except ValueError as exc:
            raise InputError(f"--decoder light:{path}: {exc}") from None
        cache[path] = light.to(getattr(pipe, "_genaccel_device", "cpu"))
    return cache[path]
