"""Quality of an accelerated video against the baseline video of the same prompt and seed.

All metrics take frames as (F, H, W, 3) arrays in [0, 1] (or uint8) of equal shape:
- PSNR over the whole clip (one MSE over all frames), in dB; identical clips give +inf;
- SSIM, the mean over frames (torchmetrics' Gaussian-window SSIM);
- temporal error: how the frame-to-frame change differs from the baseline's, as the mean absolute
  difference of the two clips' temporal differences (0 = the same motion; in [0, 1] units);
- LPIPS (AlexNet), only when its weights are already on this machine; otherwise None, never 0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, in the torch hub cache


def _as_float(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    return np.clip(frames.astype(np.float32), 0.0, 1.0)


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"videos differ in shape: {reference.shape} vs {test.shape}")
    if reference.ndim != 4 or reference.shape[-1] != 3:
        raise ValueError(f"expected (frames, height, width, 3), got {reference.shape}")


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the whole clip (+inf when identical)."""
    ref, out = _as_float(reference), _as_float(test)
    _check_pair(ref, out)
    mse = float(np.mean((ref.astype(np.float64) - out) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _nchw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Structural similarity, averaged over frames (1 = identical)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref, out = _as_float(reference), _as_float(test)
    _check_pair(ref, out)
    # An 11-pixel window needs frames of at least 11 pixels; smaller clips use a 3-pixel one.
    kernel = 11 if min(ref.shape[1:3]) >= 11 else 3
    value = structural_similarity_index_measure(_nchw(out), _nchw(ref), data_range=1.0, kernel_size=kernel)
    return float(value)


def temporal_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean |(test[t+1] - test[t]) - (ref[t+1] - ref[t])|: how differently the two clips move."""
    ref, out = _as_float(reference), _as_float(test)
    _check_pair(ref, out)
    if len(ref) < 2:
        return 0.0
    return float(np.mean(np.abs(np.diff(out, axis=0) - np.diff(ref, axis=0))))


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot be computed here (None when it can). Nothing is ever downloaded."""
    try:
        import torchvision  # noqa: F401
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity  # noqa: F401
    except ImportError:
        return "needs torchvision (and its AlexNet weights in the local torch cache)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE
    if not weights.is_file():
        return f"AlexNet weights not in the local torch cache ({weights})"
    return None


@lru_cache(maxsize=1)
def _lpips_model():
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()


def lpips(reference: np.ndarray, test: np.ndarray) -> float | None:
    """LPIPS (AlexNet) averaged over frames, or None when its weights are not available locally."""
    if lpips_unavailable_reason() is not None:
        return None
    ref, out = _as_float(reference), _as_float(test)
    _check_pair(ref, out)
    with torch.inference_mode():
        return float(_lpips_model()(_nchw(out), _nchw(ref)))


def compare_videos(reference: np.ndarray, test: np.ndarray) -> dict[str, float | None]:
    """All quality figures of `test` against `reference`."""
    return {
        "psnr": psnr(reference, test),
        "ssim": ssim(reference, test),
        "temporal_error": temporal_error(reference, test),
        "lpips": lpips(reference, test),
    }
