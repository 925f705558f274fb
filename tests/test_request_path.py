"""The request path reads a model's profile once and reports a broken profile or a full disk in one line.

A run reads its model's facts once (`genaccel.models.facts.ModelFacts`); everything downstream takes them as
an argument. A corrupt profile is one line naming the file and exit 2 from every entry point, and so is a
file system that refuses a write (no space left), with nothing left behind.
"""

import errno
import os
import re
import sys
from pathlib import Path

import pytest

from genaccel.cli import main
from genaccel.errors import ModelError
from genaccel.models.profiles import profile_dir, read_profile

PROMPT = "a red circle moving left on a black background"
SHIPPED = Path(__file__).parents[1] / "pipelines" / "profiles"

_opened: list[str] = []
_watching = {"name": None}


def _audit(event, args):
    # Counts the opens of one file name (audit hooks cannot be removed: this one does nothing when idle).
    if event == "open" and _watching["name"] and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if Path(path).name == _watching["name"]:
            _opened.append(path)


sys.addaudithook(_audit)


def _count_opens(name: str):
    _opened.clear()
    _watching["name"] = name
    return _opened


@pytest.mark.slow  # an embedded-model generation
def test_generate_with_a_preset_opens_the_models_profile_once(tmp_path, capsys):
    opened = _count_opens("tiny.toml")
    try:
        assert main(["generate", PROMPT, "--accel", "balanced", "--steps", "10", "--out", str(tmp_path / "a.mp4")]) == 0
    finally:
        _watching["name"] = None
    assert len(opened) == 1 and Path(opened[0]).resolve().parent == SHIPPED.resolve(), opened
    out = capsys.readouterr().out
    # what the preset became and what it saved, in one line
    line = next(line for line in out.splitlines() if line.startswith("accelerators: "))
    assert line.startswith("accelerators: balanced -> schedule(budget="), line
    computed, total, skipped = map(
        int, re.search(r"(\d+) of (\d+) transformer passes computed, (\d+) skipped", line).groups()
    )
    assert computed + skipped == total == 2 * 10 and skipped > 0, line  # 10 steps, 2 CFG branches


def _corrupt(name: str = "tiny") -> Path:
    path = profile_dir() / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[teacache\ncoefficients = [1, 2\n")
    return path


@pytest.fixture
def corrupt_profile():
    path = _corrupt()
    yield path
    path.unlink()


def _one_line_naming(capsys, path: Path) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genaccel: error:")]
    assert len(err) == 1 and str(path) in err[0] and "fix or delete" in err[0], err
    return err[0]


@pytest.mark.parametrize(
    "command",
    ["generate", "batch", *(pytest.param(name, marks=pytest.mark.slow) for name in ("bench", "calibrate", "tune"))],
)
def test_a_corrupt_profile_is_one_line_and_exit_2(command, corrupt_profile, tmp_path, capsys):
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\n")
    holdout = tmp_path / "holdout.txt"
    holdout.write_text("a blue square moving up on a gray background\n")
    argv = {
        "generate": ["generate", PROMPT, "--accel", "balanced", "--out", str(tmp_path / "a.mp4")],
        "batch": ["batch", str(prompts), "--out", str(out)],
        "bench": [
            "bench",
            "--accel",
            "teacache",
            "--prompt",
            PROMPT,
            "--out",
            str(out),
            "--steps",
            "2",
            "--memory",
            "off",
        ],
        "calibrate": ["calibrate", "--prompt", PROMPT, "--steps", "2", "--frames", "5"],
        "tune": [
            "tune",
            "--min-psnr",
            "30",
            "--prompts",
            str(prompts),
            "--holdout",
            str(holdout),
            "--out",
            str(out),
            "--steps",
            "2",
        ],
    }[command]
    assert main(argv) == 2
    _one_line_naming(capsys, corrupt_profile)
    assert not (tmp_path / "a.mp4").exists()


def test_a_corrupt_profile_is_one_line_in_the_ui(tmp_path):
    from genaccel.ui.service import Studio

    path = _corrupt("tiny-wan")
    try:
        studio = Studio(tmp_path, default_model="tiny-wan", device="cpu")
        with pytest.raises(ModelError) as info:
            studio.model_info("tiny-wan")
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    finally:
        path.unlink()


def test_every_shipped_profile_reads():
    shipped = sorted(SHIPPED.glob("*.toml"))
    assert shipped
    for path in shipped:
        assert isinstance(read_profile(path), dict)


def test_an_unreadable_profile_is_named(tmp_path):
    folder = tmp_path / "p.toml"
    folder.mkdir()  # a folder where the file should be: reading it fails
    with pytest.raises(ModelError, match="p.toml: cannot read it"):
        read_profile(folder)


def _errors(capsys) -> list[str]:
    """genaccel's own lines on stderr (progress bars aside), after checking that no traceback came."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("genaccel:")]


@pytest.fixture
def full_disk(monkeypatch):
    """The disk fills while a video is being encoded: the encoder's write fails with ENOSPC after it wrote
    part of its file."""
    import imageio.v3 as iio

    def imwrite(uri, *args, **kwargs):
        Path(uri).write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(uri))

    monkeypatch.setattr(iio, "imwrite", imwrite)


def test_generate_on_a_full_disk_is_one_line_and_leaves_nothing(full_disk, tmp_path, capsys):
    target = tmp_path / "full" / "frames"
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "--out", str(target)]) == 2
    err = _errors(capsys)
    assert err == [f"genaccel: error: cannot write {target}: No space left on device"], err
    assert list((tmp_path / "full").iterdir()) == []


def test_batch_on_a_full_disk_is_one_line_and_leaves_no_video(full_disk, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\n")
    out = tmp_path / "out"
    assert main(["batch", str(prompts), "--out", str(out), "--steps", "2", "--frames", "5"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and err[0].startswith("genaccel: error: cannot write ") and "No space left" in err[0], err
    assert not [p for p in out.rglob("*") if p.suffix == ".mp4"]
