"""Writing frames to .mp4, .gif, .webp or a folder of PNGs, atomically.

Files are written next to their destination under a temporary name and renamed into place, so a
failed or interrupted write never leaves a partial file behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from genaccel.errors import InputError
from genaccel.io import failpoints
from genaccel.io.files import replace_atomic, stale_temporaries, temp_prefix, writing

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
# A frame folder genaccel wrote holds this marker and frame_NNNN.png files, nothing else; only such
# a folder (or an empty one) is ever replaced.
FRAME_FOLDER_MARKER = ".genaccel-frames"
_FRAME_NAME = re.compile(r"^frame_\d{4,}\.png$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames as uint8: floats in [0, 1] are scaled, uint8 passes through."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def is_frame_folder(path: Path) -> bool:
    """True if `path` is a folder of PNG frames written by genaccel (marker and frames only)."""
    return (path / FRAME_FOLDER_MARKER).is_file() and holds_only_frames(path)


def _check_frame_folder_target(path: Path) -> None:
    """A PNG-folder target must be new, empty, or a frame folder genaccel wrote before."""
    if path.name in ("", ".", ".."):
        raise InputError(f"cannot write frames to '{path}': name a new folder for them (e.g. frames/)")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"cannot write frames to {path}: it exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not is_frame_folder(path):
        raise InputError(
            f"refusing to write frames into {path}: it holds files genaccel did not write "
            "(choose a new or empty folder)"
        )


def check_output_path(path: str | Path, *, probe: bool = True) -> Path:
    """Validate an output path before any work is done: known suffix, writable parent folder (really
    tried unless `probe=False`, for a folder already checked), and nothing of the user's in the way
    (see `_check_frame_folder_target`)."""
    if not str(path).strip():
        raise InputError("the output path is empty")
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES:
        raise InputError(f"unsupported output format '{suffix}' (use .mp4, .gif, .webp, or a folder for PNG frames)")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write to {path}: {folder} is not a folder")
    if probe:
        try:  # os.access is not enough (root, read-only mounts): really try
            fd, name = tempfile.mkstemp(prefix=".genaccel-probe-", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise InputError(f"cannot write to {path}: {exc.strerror or exc}") from None
    if suffix and path.is_dir():
        raise InputError(f"cannot write to {path}: it is a folder")
    if suffix and path.is_file() and not path.is_symlink() and not _is_video_file(path, suffix):
        raise InputError(
            f"{path} exists and is not a {suffix} video: genaccel replaces only videos (choose another --out)"
        )
    if not suffix:
        _check_frame_folder_target(path)
    return path


def _is_video_file(path: Path, suffix: str) -> bool:
    """Whether `path` starts like a video of its suffix's format (an earlier output, which a new one may
    replace), not a document that happens to have that name."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    if suffix == ".mp4":
        return head[4:8] == b"ftyp"
    if suffix == ".gif":
        return head[:4] == b"GIF8"
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8, *, checked: bool = False) -> Path:
    """Write (F, H, W, 3) frames in [0, 1]; the suffix picks the format, no suffix = PNG folder.

    `checked=True` says `path` came from `check_output_path` already (a frame folder's target is
    still re-checked right before it is swapped in). The file system refusing the write (no space, no
    permission) is an OutputError naming `path`, with nothing left behind.
    """
    path = Path(path) if checked else check_output_path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3:
        raise InputError(f"expected frames shaped (frames, height, width, 3), got {frames.shape}")
    data = to_uint8(frames)
    with writing(path):
        _write(data, path, fps)
    return path


def _write(data: np.ndarray, path: Path, fps: int) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if not suffix:
        _write_frame_folder(path, data)
        return
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    failpoints.reached("video:temp-created")
    try:
        if suffix == ".mp4":
            # macro_block_size=1 keeps small frames at their size; yuv420p plays everywhere but
            # needs even sides, so odd sizes are padded by one pixel.
            h, w = data.shape[1:3]
            if h % 2 or w % 2:
                data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            iio.imwrite(
                tmp,
                data,
                extension=".mp4",
                plugin="FFMPEG",
                fps=fps,
                macro_block_size=1,
                codec="libx264",
                pixelformat="yuv420p",
                output_params=["-crf", "12"],
            )
        elif suffix == ".gif":
            iio.imwrite(tmp, data, extension=".gif", duration=int(1000 / fps), loop=0)
        else:
            _write_webp(tmp, data, fps)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        failpoints.reached("video:encoded")
        replace_atomic(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove what a killed writer of `path` left (its temporary file or frame folder), never another
    live process's; returns what was removed. A write that is interrupted normally removes its own."""
    removed = []
    for entry in stale_temporaries(path):
        if entry.is_dir():
            moved_aside = entry / "frames"  # an earlier frame folder on its way out (_write_frame_folder)
            if holds_only_frames(entry) or (
                [p.name for p in entry.iterdir()] == ["frames"] and holds_only_frames(moved_aside)
            ):
                shutil.rmtree(entry)
                removed.append(entry)
        else:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def holds_only_frames(folder: Path) -> bool:
    """A real folder holding nothing but PNG frames as genaccel names them (and its marker, if finished)."""
    return (
        folder.is_dir()
        and not folder.is_symlink()
        and all(p.name == FRAME_FOLDER_MARKER or (_FRAME_NAME.match(p.name) and p.is_file()) for p in folder.iterdir())
    )


def _write_frame_folder(path: Path, data: np.ndarray) -> None:
    """Write PNG frames into a temporary folder, then swap it in; an earlier genaccel frame folder
    at `path` is moved aside and deleted only once the new one is in place."""
    import imageio.v3 as iio

    remove_stale_temporaries(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    failpoints.reached("video:temp-created")
    old = None
    try:
        for i, frame in enumerate(data):
            iio.imwrite(tmp_dir / f"frame_{i:04d}.png", frame)
        (tmp_dir / FRAME_FOLDER_MARKER).write_text("PNG frames written by genaccel\n")
        os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes it private
        failpoints.reached("video:encoded")
        _check_frame_folder_target(path)  # again: something may have appeared since the first check
        if path.is_dir():
            if any(path.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=temp_prefix(path) + "old-", dir=path.parent))
                os.replace(path, old / "frames")
            else:
                path.rmdir()
        os.replace(tmp_dir, path)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old / "frames", path)  # put the earlier frames back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_webp(path: Path, data: np.ndarray, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in data]
    images[0].save(
        path, format="WEBP", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, lossless=True
    )


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


class StreamWriter:
    """Writes an .mp4 as frames arrive, playable at any moment (fragmented MP4: each keyframe closes a
    fragment), under a temporary name next to `path` (`.NAME.part.mp4`) until `close()` renames it into
    place. A stream stopped early (Ctrl-C, the stop button) is closed the same way; one killed outright
    leaves the playable part file, never a half-written file under the final name.
    """

    def __init__(self, path: str | Path, fps: int = 8, *, checked: bool = False):
        path = Path(path) if checked else check_output_path(path)
        if path.suffix.lower() != ".mp4":
            raise InputError(f"a stream is written as .mp4 (it plays while it grows); got '{path.name}'")
        self.path = path
        self.fps = fps
        self.part = path.with_name(f".{path.stem}.part.mp4")
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, frames: np.ndarray) -> None:
        """Append (F, H, W, 3) frames in [0, 1]; they are on disk (playable) when this returns."""
        with writing(self.path):
            self._write(frames)

    def _write(self, frames: np.ndarray) -> None:
        import imageio_ffmpeg

        data = to_uint8(np.asarray(frames))
        h, w = data.shape[1:3]
        if h % 2 or w % 2:
            data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (data.shape[2], data.shape[1])
            self._writer = imageio_ffmpeg.write_frames(
                str(self.part),
                self._size,
                fps=self.fps,
                codec="libx264",
                macro_block_size=1,
                output_params=[
                    "-crf",
                    "12",
                    "-tune",
                    "zerolatency",
                    "-g",
                    str(max(1, len(data))),
                    "-movflags",
                    "frag_keyframe+empty_moov+default_base_moof",
                    "-flush_packets",
                    "1",
                ],
            )
            self._writer.send(None)
        for frame in data:
            self._writer.send(np.ascontiguousarray(frame))
        self.frames += len(data)

    def close(self) -> Path | None:
        """Finish the file and move it to its final name; None when no frame was written."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        os.chmod(self.part, 0o666 & ~_umask())
        os.replace(self.part, self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# A preview folder genaccel wrote holds this marker and step_NNNN.png strips, nothing else: only such a folder
# (or a new or empty one) receives previews, and a later run may replace its strips.
PREVIEW_FOLDER_MARKER = ".genaccel-previews"
_PREVIEW_NAME = re.compile(r"^step_\d{4,}\.png$")


def check_preview_folder(path: str | Path) -> Path:
    """A folder for live previews: new, empty, or one genaccel filled with previews before."""
    path = Path(path).expanduser()
    if path.name in ("", ".", ".."):
        raise InputError(f"cannot write previews to '{path}': name a new folder for them (e.g. previews/)")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"cannot write previews to {path}: it exists and is not a folder")
    if path.is_dir():
        entries = list(path.iterdir())
        ours = all(p.name == PREVIEW_FOLDER_MARKER or (_PREVIEW_NAME.match(p.name) and p.is_file()) for p in entries)
        if entries and not ((path / PREVIEW_FOLDER_MARKER).is_file() and ours):
            raise InputError(
                f"refusing to write previews into {path}: it holds files genaccel did not write "
                "(choose a new or empty folder)"
            )
    return path


def preview_strip(frames: np.ndarray, most: int = 8) -> np.ndarray:
    """Up to `most` frames, evenly picked, side by side: one uint8 image (H, W * n, 3)."""
    frames = to_uint8(frames)
    picks = np.unique(np.linspace(0, len(frames) - 1, min(most, len(frames))).round().astype(int))
    return np.concatenate(list(frames[picks]), axis=1)


def write_preview(frames: np.ndarray, folder: Path, step: int) -> Path:
    """Write one preview as folder/step_NNNN.png (a strip of its frames), atomically; returns its path."""
    import io

    from PIL import Image

    from genaccel.io.files import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / PREVIEW_FOLDER_MARKER
    if not marker.is_file():
        write_atomic(marker, "live previews written by genaccel\n")
    buffer = io.BytesIO()
    Image.fromarray(preview_strip(frames)).save(buffer, format="PNG")
    return write_atomic(folder / f"step_{step:04d}.png", buffer.getvalue())
