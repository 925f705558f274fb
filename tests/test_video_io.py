"""Video writing: formats, atomic writes, and path checks."""

import os

import numpy as np
import pytest

from genaccel.errors import InputError
from genaccel.io.video import check_output_path, read_video, write_video


def _moving_bar(frames=9, h=32, w=48):
    video = np.zeros((frames, h, w, 3), np.float32)
    for i in range(frames):
        video[i, :, 4 * i : 4 * i + 8, 0] = 1.0
    return video


@pytest.mark.parametrize("name, tolerance", [("v.mp4", 12), ("v.gif", 2), ("v.webp", 0), ("pngs", 0)])
def test_round_trip(tmp_path, name, tolerance):
    video = _moving_bar()
    path = write_video(video, tmp_path / name)
    back = read_video(path).astype(np.float32)
    assert back.shape == video.shape
    assert np.abs(back - video * 255).mean() <= tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~mask


def test_odd_sizes_are_padded_for_mp4(tmp_path):
    back = read_video(write_video(_moving_bar(5, 17, 33), tmp_path / "o.mp4"))
    assert back.shape == (5, 18, 34, 3)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="expected frames"):
        write_video(np.zeros((0, 8, 8, 3)), tmp_path / "empty.gif")

    def broken_writer(path, data, fps):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("genaccel.io.video._write_webp", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        write_video(_moving_bar(), tmp_path / "v.webp")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "v.gif"
    write_video(_moving_bar(), path)
    write_video(_moving_bar(3), path)
    assert read_video(path).shape[0] == 3


def test_check_output_path(tmp_path):
    with pytest.raises(InputError, match="unsupported output format"):
        check_output_path(tmp_path / "x.avi")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        check_output_path(tmp_path / "f" / "x.mp4")
    assert check_output_path(tmp_path / "new" / "x.mp4") == tmp_path / "new" / "x.mp4"
