"""Peak memory of one run: CUDA max allocated on a GPU, the process's peak RSS growth on CPU.

On Linux the kernel's RSS high-water mark (VmHWM) can be reset by writing "5" to
/proc/self/clear_refs, which makes a per-run peak exact and free. Where that is not allowed, a
background thread samples the RSS every few milliseconds instead.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps.

    `peak_bytes` is, on CUDA, `torch.cuda.max_memory_allocated` during the block; on CPU, the peak
    resident set size during the block minus the resident size at its start. `method` says which
    way it was measured (or "unavailable").
    """

    def __init__(self, device: torch.device | str = "cpu", sample_seconds: float = 0.005):
        self.device = torch.device(device)
        self.sample_seconds = sample_seconds
        self.peak_bytes: int | None = None
        self.method = "unavailable"
        self._baseline = None
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_allocated"
            return self
        self._baseline = current_rss_bytes()
        if self._baseline is None:
            return self
        if _reset_high_water_mark():
            self.method = "rss_high_water_mark"
        else:
            self.method = "rss_sampled"
            self._sampled_peak = self._baseline
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_seconds):
            rss = current_rss_bytes() or 0
            self._sampled_peak = max(self._sampled_peak, rss)

    def __exit__(self, *exc) -> None:
        if self.method == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.method == "rss_high_water_mark":
            peak = (_status_kib("VmHWM") or 0) * 1024
            self.peak_bytes = max(0, peak - self._baseline)
        elif self.method == "rss_sampled":
            self._stop.set()
            self._thread.join()
            self._sampled_peak = max(self._sampled_peak, current_rss_bytes() or 0)
            self.peak_bytes = max(0, self._sampled_peak - self._baseline)
