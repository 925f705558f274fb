"""Crash-safe file writes: a file appears under its name only when complete.

`write_atomic` writes a temporary file in the same folder, flushes it to disk and renames it into place
(a rename within a folder is atomic), so a kill at any moment leaves the old file or the new one, never
half of one. `append_line` adds one complete, flushed line to a log such as a batch manifest; readers
drop a torn last line that a kill in the middle of an append can leave (`read_log`). `check_or_write_plan`
keeps a resumed run from mixing its results with those of a different run. `writing(path)` turns the file
system refusing a write (no space, no permission, a read-only folder) into one `OutputError` naming the file.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

from genaccel.errors import OutputError

# What the file system answers when it will not take a write: the user's to fix, not genaccel's bug.
REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


@contextmanager
def writing(path: Path):
    """Around the writing of `path`: the file system refusing it becomes an OutputError naming `path` (the
    file the user asked for, not a temporary one). The writer removes its temporary files on the way out."""
    try:
        yield
    except OSError as exc:
        if exc.errno in REFUSALS:
            reason = exc.strerror or str(exc)
        elif "No space left on device" in str(exc):  # ffmpeg's, relayed by imageio as a broken pipe
            reason = "No space left on device"
        else:
            raise
        raise OutputError(f"cannot write {path}: {reason}") from None


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries after a rename, to disk (where the file system can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    """Temporary files and folders for `path` are named `.NAME.genaccel-PID-...`: hidden, recognisably
    genaccel's, and tied to the process writing them (see `stale_temporaries`)."""
    return f".{path.name}.genaccel-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_temporaries(path: Path) -> list[Path]:
    """What killed writers of `path` left next to it (named by `temp_prefix`): never a live process's
    temporary, never a symlink."""
    pattern = re.compile(re.escape(f".{path.name}.genaccel-") + r"(\d+)-.*")
    found = []
    for entry in path.parent.glob(f".{glob.escape(path.name)}.genaccel-*"):
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not _alive(pid):
            found.append(entry)
    return found


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary file and a rename; first removes what a
    killed writer of `path` left."""
    path = Path(path)
    for stale in stale_temporaries(path):
        if stale.is_file():
            stale.unlink()
    tmp = path.with_name(temp_prefix(path) + "tmp")
    with writing(path):
        _write_through(tmp, path, data)
    fsync_path(path.parent)
    return path


def _write_through(tmp: Path, path: Path, data: str | bytes) -> None:
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_atomic(tmp: Path, path: Path) -> None:
    """Move a finished temporary file (written by a library: a plot, a video) into place, flushed first."""
    fsync_path(tmp)
    with writing(path):
        os.replace(tmp, path)
    fsync_path(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line (without its newline) and flush it to disk."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(path: Path) -> list[dict]:
    """The JSON lines of a log written with `append_line`. A last line cut short by a kill is cut from the
    file too, so that the work it recorded runs again and the next append starts on a fresh line."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        write_atomic(path, text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_or_write_plan(path: Path, plan: dict, holds: str) -> None:
    """Guard a resumable run: the first run writes its `plan` to `path`; a later run into the same folder
    must have the same plan, else InputError names the fields that differ ("DIR holds `holds` ...")."""
    from genaccel.errors import InputError

    path = Path(path)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != plan:
            changed = sorted(k for k in set(previous) | set(plan) if previous.get(k) != plan.get(k))
            raise InputError(
                f"{path.parent} holds {holds} (differs in: {', '.join(changed)}); use another --out or delete it"
            )
        return
    write_atomic(path, json.dumps(plan, indent=1) + "\n")
