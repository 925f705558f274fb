"""Running generations for the web UI: one at a time per device, cancellable, pipelines cached.

Gradio's queue already serialises the UI's events (one concurrency slot per device); the lock
here also holds for API callers and keeps the invariant local. Work runs in a worker thread that
reports events through a queue, so a handler can stream progress and partial results while the
job runs, and a cancel request stops it at the next denoising step.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is set."""


class PipelineCache:
    """Loaded pipelines by (model, device), least recently used dropped beyond `capacity`."""

    def __init__(self, capacity: int = 2, loader: Callable | None = None):
        from genaccel.generation.load import load_pipeline

        self.capacity = capacity
        # Left on the CPU: the first generation places it as its request says, after its memory check.
        self._loader = loader or (lambda model, device: load_pipeline(model, device=device, offload=None))
        self._pipes: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a pipeline was really loaded (tests check the cache works)

    def get(self, model: str, device: str = "auto"):
        key = (model, device)
        with self._lock:
            if key in self._pipes:
                self._pipes.move_to_end(key)
                return self._pipes[key]
            pipe = self._loader(model, device)
            self.loads += 1
            self._pipes[key] = pipe
            while len(self._pipes) > self.capacity:
                self._pipes.popitem(last=False)
            return pipe


@dataclass
class Job:
    """One running (or waiting) unit of work of one browser session."""

    session: str
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue = field(default_factory=queue.Queue)

    def check(self) -> None:
        """Raise Cancelled if this job was cancelled (called between denoising steps)."""
        if self.cancel_flag.is_set():
            raise Cancelled()

    def emit(self, kind: str, value: Any = None) -> None:
        self.events.put((kind, value))


class JobRunner:
    """Runs jobs one at a time per device and lets a session cancel its own job."""

    def __init__(self):
        self._device_locks: dict[str, threading.Lock] = {}
        self._active: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _device_lock(self, device: str) -> threading.Lock:
        with self._lock:
            return self._device_locks.setdefault(device, threading.Lock())

    def cancel(self, session: str) -> bool:
        """Ask the session's running or waiting job to stop; False if it has none."""
        with self._lock:
            job = self._active.get(session)
        if job is None:
            return False
        job.cancel_flag.set()
        return True

    def busy(self, device: str) -> bool:
        """Whether a job (or `hold`) has the device now."""
        return self._device_lock(device).locked()

    @contextmanager
    def hold(self, device: str):
        """Keep `device` from jobs until the block ends (they wait, as behind a long job): for maintenance,
        and for tests of a full queue."""
        with self._device_lock(device):
            yield

    def run(self, session: str, device: str, work: Callable[[Job], Any]) -> Iterator[tuple[str, Any]]:
        """Run `work(job)` in a worker thread; yield the events it emits, then ("done", result).

        Exceptions raised by `work` are re-raised here (Cancelled included).
        """
        job = Job(session)
        with self._lock:
            previous = self._active.get(session)
            if previous is not None:
                previous.cancel_flag.set()  # a new click from the same page replaces its old job
            self._active[session] = job
        lock = self._device_lock(device)

        def target():
            try:
                # The device is released however the work ends (an error, a cancel, a refusal): one
                # visitor's failure never keeps the next one waiting.
                with lock:
                    job.check()  # cancelled while waiting for the device
                    result = work(job)
                job.emit("done", result)
            except BaseException as exc:  # handed to the caller's thread
                job.emit("error", exc)

        thread = threading.Thread(target=target, name=f"genaccel-job-{session[:8]}", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = job.events.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            # If the consumer stops early (the page went away, Gradio cancelled the event), stop the work too.
            job.cancel_flag.set()
            with self._lock:
                if self._active.get(session) is job:
                    del self._active[session]
