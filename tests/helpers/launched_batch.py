"""A batch run by `accelerate launch` in tests/test_distributed_batch.py: the CLI's batch, except that
with --kill-after N the second process kills itself (SIGKILL: no cleanup) right after its Nth video."""

import os
import signal
import sys
from pathlib import Path

from genaccel.cli import main
from genaccel.generation import batch

if "--kill-after" in sys.argv:
    at = sys.argv.index("--kill-after")
    kill_after = int(sys.argv[at + 1])
    del sys.argv[at : at + 2]
    run_batch = batch.run_batch

    def run_killed(*args, processes=None, on_item=None, **kwargs):
        made = []

        def after_video(entry, path):
            made.append(path)
            if processes is not None and processes.process_index == 1 and len(made) == kill_after:
                Path(os.environ["KILL_MARK"]).write_text(entry["name"])
                os.kill(os.getpid(), signal.SIGKILL)

        return run_batch(*args, processes=processes, on_item=after_video, **kwargs)

    batch.run_batch = run_killed

sys.exit(main(["batch", *sys.argv[1:]]))
