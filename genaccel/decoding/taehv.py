"""TAEHV's decoder: a tiny convolutional decoder from video latents straight to frames.

The architecture of madebyollin/taehv (`taehv.py`, MIT), decoder half, written here with the same module
indices so that its published weights (taew2_1 for Wan 2.1, taehv for HunyuanVideo, taecvx for CogVideoX,
taew2_2 for Wan 2.2 5B) load as they are: a clamp, a 3x3 conv, then per stage `blocks` memory blocks, a
nearest 2x upsample, a temporal grow and a 3x3 conv, and a last 3x3 conv to RGB (pixel-shuffled by
`patch_size`). A memory block sees its own input and that of the previous frame; a temporal grow turns each
frame into `stride` frames with a 1x1 conv. The decoder reads the latents the transformer makes (no
latents_mean/std) and writes frames in [0, 1]; the first `t_upscale - 1` frames it makes are trimmed, so
that `T` latent frames become `1 + t_upscale * (T - 1)` video frames, as a causal video VAE makes.

`DecoderMemory` carries each memory block's last input from one chunk to the next: decoding a clip chunk by
chunk gives the frames of decoding it at once. The wiring (which decoder a pipeline gets, the request's
`decoder` field, previews) is in `genaccel.decoding.light`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the latents to about [-3, 3]."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual conv block over a frame and the previous frame's input to this block (its memory)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out),
            nn.ReLU(inplace=True),
            _conv(n_out, n_out),
            nn.ReLU(inplace=True),
            _conv(n_out, n_out),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x, past):
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal upsampling: each frame becomes `stride` frames (a 1x1 conv to stride x channels)."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x):
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


@dataclass(frozen=True)
class TAEHVConfig:
    """The decoder's shape. The defaults are TAEHV's (taew2_1 / taehv); the embedded model's is smaller."""

    latent_channels: int = 16
    channels: tuple[int, int, int, int] = (256, 128, 64, 64)
    blocks: int = 3  # memory blocks per stage
    time_upscale: tuple[bool, bool, bool] = (False, True, True)
    space_upscale: tuple[bool, bool, bool] = (True, True, True)
    patch_size: int = 1  # output pixel-shuffle factor (Wan 2.2's VAE works on 2x2 patches)
    trim: str = "causal"  # "causal": drop the first t_upscale - 1 frames; "cogvideox": not for even counts

    @property
    def t_upscale(self) -> int:
        return 2 ** sum(self.time_upscale)

    @property
    def s_upscale(self) -> int:
        return 2 ** sum(self.space_upscale) * self.patch_size

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict) -> "TAEHVConfig":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class TAEHVDecoder(nn.Module):
    """TAEHV's decoder (`decoder.*` keys of a TAEHV checkpoint): NTCHW latents -> NTCHW frames in [0, 1]."""

    def __init__(self, config: TAEHVConfig = TAEHVConfig()):
        super().__init__()
        self.config = config
        n_f = config.channels
        layers: list[nn.Module] = [Clamp(), _conv(config.latent_channels, n_f[0]), nn.ReLU(inplace=True)]
        for stage in range(3):
            layers += [MemBlock(n_f[stage], n_f[stage]) for _ in range(config.blocks)]
            layers += [
                nn.Upsample(scale_factor=2 if config.space_upscale[stage] else 1),
                TGrow(n_f[stage], 2 if config.time_upscale[stage] else 1),
                _conv(n_f[stage], n_f[stage + 1], bias=False),
            ]
        layers += [nn.ReLU(inplace=True), _conv(n_f[3], 3 * config.patch_size**2)]
        self.decoder = nn.Sequential(*layers)

    def frames_out(self, latent_frames: int) -> int:
        """Video frames made from `latent_frames` latent frames decoded at once."""
        made = latent_frames * self.config.t_upscale
        return made - self._trim(latent_frames)

    def _trim(self, latent_frames: int) -> int:
        if self.config.trim == "cogvideox" and latent_frames % 2 == 0:
            return 0  # TAEHV keeps every frame of an even CogVideoX latent count
        return self.config.t_upscale - 1

    def forward(self, latents: torch.Tensor, memory: "DecoderMemory | None" = None) -> torch.Tensor:
        """(N, T, C, h, w) latents -> (N, T', 3, H, W) frames in [0, 1]. With `memory`, the call continues
        the clip that memory has seen (its first chunk trimmed as a whole clip's start is)."""
        n, t = latents.shape[:2]
        first = memory is None or memory.frames_made == 0
        x = latents.reshape(n * t, *latents.shape[2:])
        for index, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                frames = x.reshape(n, -1, *x.shape[1:])
                previous = memory.past.get(index) if memory is not None else None
                if previous is None:
                    previous = torch.zeros_like(frames[:, :1])
                past = torch.cat([previous, frames[:, :-1]], 1).reshape(x.shape)
                if memory is not None:
                    memory.past[index] = frames[:, -1:].detach().clone()
                x = layer(x, past)
            else:
                x = layer(x)
        x = x.reshape(n, -1, *x.shape[1:])
        if self.config.patch_size > 1:
            frames = x.shape[1]
            x = F.pixel_shuffle(x.flatten(0, 1), self.config.patch_size)
            x = x.reshape(n, frames, *x.shape[1:])
        x = x.clamp(0, 1)
        if first:
            x = x[:, self._trim(t) :]
        if memory is not None:
            memory.frames_made += x.shape[1]
        return x


@dataclass
class DecoderMemory:
    """What a `TAEHVDecoder` carries between the chunks of one clip: each memory block's last input frame."""

    past: dict[int, torch.Tensor] = field(default_factory=dict)
    frames_made: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.past.values())


def config_from_state_dict(state: dict[str, torch.Tensor], spatial_scale: int, trim: str = "causal") -> TAEHVConfig:
    """The decoder shape a TAEHV checkpoint's `decoder.*` tensors imply, for a VAE that scales space by
    `spatial_scale` (the upsamples carry no weights: the pixel shuffle and the VAE's factor decide them)."""
    if "decoder.1.weight" not in state:
        raise ValueError("no decoder.* weights: not a TAEHV checkpoint")
    if any(k.startswith("decoder.") and ".conv.0." in k and v.shape[-1] == 7 for k, v in state.items()):
        raise ValueError("a TAEHV 'super' checkpoint: only the base decoder is supported")
    first = state["decoder.1.weight"]
    mem_blocks = {k.split(".")[1] for k in state if k.startswith("decoder.") and k.endswith(".conv.0.weight")}
    blocks = len(mem_blocks) // 3
    widths, time_upscale = [first.shape[0]], []
    for stage in range(3):
        start = 3 + stage * (blocks + 3)  # memory blocks, Upsample, TGrow, conv
        grow = state[f"decoder.{start + blocks + 1}.conv.weight"]
        time_upscale.append(grow.shape[0] == 2 * grow.shape[1])
        widths.append(state[f"decoder.{start + blocks + 2}.weight"].shape[0])
    out = state[f"decoder.{3 + 3 * (blocks + 3) + 1}.weight"]
    patch = int(round((out.shape[0] // 3) ** 0.5))
    ups = spatial_scale // patch
    if ups not in (1, 2, 4, 8) or ups * patch != spatial_scale:
        raise ValueError(f"a decoder with patch size {patch} cannot scale space by {spatial_scale}")
    n_up = ups.bit_length() - 1
    space_upscale = tuple(stage >= 3 - n_up for stage in range(3))
    return TAEHVConfig(
        latent_channels=first.shape[1],
        channels=tuple(widths),
        blocks=blocks,
        time_upscale=tuple(time_upscale),
        space_upscale=space_upscale,
        patch_size=patch,
        trim=trim,
    )
