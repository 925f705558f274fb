"""Writing frames to .mp4, .gif, .webp or a folder of PNGs, atomically.

Files are written next to their destination under a temporary name and renamed into place, so a
failed or interrupted write never leaves a partial file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from genaccel.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) floats in [0, 1] -> uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_output_path(path: str | Path) -> Path:
    """Validate an output path before any work is done: known suffix, writable parent folder."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES:
        raise InputError(f"unsupported output format '{suffix}' (use .mp4, .gif, .webp, or a folder for PNG frames)")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write to {path}: {probe} is not a folder")
    try:  # os.access is not enough (root, read-only mounts): really try
        fd, name = tempfile.mkstemp(prefix=".genaccel-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"cannot write to {path}: {exc.strerror or exc}") from None
    if path.exists() and path.is_dir() and suffix:
        raise InputError(f"cannot write to {path}: it is a folder")
    return path


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write (F, H, W, 3) frames in [0, 1]; the suffix picks the format, no suffix = PNG folder."""
    import imageio.v3 as iio

    path = check_output_path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3:
        raise InputError(f"expected frames shaped (frames, height, width, 3), got {frames.shape}")
    data = to_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if not suffix:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for i, frame in enumerate(data):
                iio.imwrite(tmp_dir / f"frame_{i:04d}.png", frame)
            os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes it private
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp_dir, path)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        return path
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".mp4":
            # macro_block_size=1 keeps small frames at their size; yuv420p plays everywhere but
            # needs even sides, so odd sizes are padded by one pixel.
            h, w = data.shape[1:3]
            if h % 2 or w % 2:
                data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            iio.imwrite(tmp, data, extension=".mp4", plugin="FFMPEG", fps=fps, macro_block_size=1,
                        codec="libx264", pixelformat="yuv420p", output_params=["-crf", "12"])
        elif suffix == ".gif":
            iio.imwrite(tmp, data, extension=".gif", duration=int(1000 / fps), loop=0)
        else:
            _write_webp(tmp, data, fps)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_webp(path: Path, data: np.ndarray, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in data]
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=int(1000 / fps),
                   loop=0, lossless=True)


def read_video(path: str | Path) -> np.ndarray:
    """Read a video file or PNG folder back as (F, H, W, 3) uint8."""
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        return np.stack([iio.imread(p)[..., :3] for p in sorted(path.glob("*.png"))])
    if path.suffix.lower() in (".gif", ".webp"):
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)])
    return np.asarray(iio.imread(path, index=None, plugin="FFMPEG"))[..., :3]
