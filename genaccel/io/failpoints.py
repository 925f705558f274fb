"""Named points where a crash test can kill the process outright (SIGKILL, as the OOM killer or a power cut
would), to check that what a killed run leaves behind is always resumable.

The writers call `reached("batch:listed")` and so on at the moments that matter for crash safety; it does
nothing unless the environment variable GENACCEL_KILL_AT is set, to "NAME" (the first time NAME is
reached) or "NAME:N" (the N-th time). Only tests set it (tests/test_crash_safety.py).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "GENACCEL_KILL_AT"
POINTS = (
    "video:temp-created",  # write_video: its temporary file exists, still empty
    "video:encoded",  # write_video: the temporary file is complete, not yet renamed
    "batch:generated",  # a batch item's frames are made, nothing of it written yet
    "batch:staged",  # its video is complete under the staged name, not in the manifest yet
    "batch:listed",  # its manifest line is written, the video not yet under its final name
    "batch:renamed",  # the video is under its final name
)
_seen: Counter = Counter()


def reached(name: str) -> None:
    """Kill this process here if GENACCEL_KILL_AT names this point (and this is the N-th time)."""
    target = os.environ.get(ENV)
    if not target:
        return
    point, _, count = target.rpartition(":")
    if not count.isdigit():  # no count: the first time
        point, count = target, "1"
    if point != name:
        return
    _seen[name] += 1
    if _seen[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
