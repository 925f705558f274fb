"""Decoding a stream chunk by chunk with a causal video VAE, its temporal feature cache carried over.

Wan's VAE decodes latent frame by latent frame, each causal 3-D convolution keeping the last frames it saw
(`feat_cache`). Carrying that cache from one chunk to the next makes decoding a stream in chunks give the
same frames as decoding the whole clip at once, at a constant cost per chunk: the first latent frame
becomes one video frame, every later one `scale_factor_temporal` frames.
"""

from __future__ import annotations

import numpy as np
import torch


def _decoder_conv_count(vae) -> int:
    counts = getattr(vae, "_cached_conv_counts", None)
    if counts is not None:
        return counts["decoder"]
    return sum(1 for m in vae.decoder.modules() if type(m).__name__ == "WanCausalConv3d")


class StreamingDecoder:
    """Decodes normalised Wan latents (as the transformer makes them) chunk by chunk into frames."""

    def __init__(self, vae):
        self.vae = vae
        z_dim = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: the next chunk is decoded as the clip's first."""
        self.feat_cache = [None] * _decoder_conv_count(self.vae)
        self.first = True

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.feat_cache if isinstance(t, torch.Tensor))

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """(1, C, f, h, w) latents -> float32 frames (F, H, W, 3) in [0, 1]."""
        vae = self.vae
        z = latents.to(vae.dtype) * self.std.to(latents.device, vae.dtype) + self.mean.to(latents.device, vae.dtype)
        x = vae.post_quant_conv(z)
        outs = []
        for i in range(x.shape[2]):
            outs.append(
                vae.decoder(x[:, :, i : i + 1], feat_cache=self.feat_cache, feat_idx=[0], first_chunk=self.first)
            )
            self.first = False
        video = torch.cat(outs, dim=2)
        if vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            video = unpatchify(video, patch_size=vae.config.patch_size)
        video = (video.clamp(-1, 1) / 2 + 0.5)[0].permute(1, 2, 3, 0)
        return video.float().cpu().numpy()
