"""Peak memory of one generation: what a run needs, measured two ways.

- CPU, method `rss_fresh_process`: the peak resident set size (the kernel's high-water mark,
  VmHWM; `ru_maxrss` where there is no /proc) of a fresh Python process that imports genaccel,
  loads the model, applies the configuration and makes one video. It counts everything the run
  holds at its worst moment (interpreter and libraries, weights, activations, caches), and nothing
  left over from earlier runs, so the same configuration reads the same number in every table.
  `generation_peak` runs one such process; `fresh_process_peak` is the primitive under it (any
  `module:function` in a child process).
- CUDA, method `cuda_max_allocated`: `torch.cuda.max_memory_allocated` after
  `reset_peak_memory_stats`, in process (`CudaPeakMemory`). The peak is reset to what is allocated
  when the block starts (the weights), so it counts the weights plus the run's largest
  allocations; tensors PyTorch frees are returned to its caching allocator, so one run does not
  inflate the next. `generation_peak` on a CUDA device reports this figure, taken in the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genaccel.errors import GenAccelError
from genaccel.io.files import write_atomic

FRESH_PROCESS = "rss_fresh_process"
CUDA_MAX_ALLOCATED = "cuda_max_allocated"
UNAVAILABLE = "unavailable"

_CHILD = "from genaccel.tools.bench.memory import _child_main; _child_main()"
# Libraries' warnings, log lines and progress bars kept out of the child's stderr, so that its
# last line is the error when it fails.
_CHILD_ENV = {
    # glibc adapts its mmap threshold as a process frees large blocks, keeping later ones on the
    # heap after they are freed: RSS then tracks the allocator's history, not what is live (a fresh
    # process's peak varied by +-60 MB from run to run). A fixed threshold returns every large block
    # on free, so the peak is the live peak (+-1 MB).
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "PYTHONWARNINGS": "ignore",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class MemoryMeasureError(GenAccelError):
    """A memory measurement whose child process failed; the message is one line."""


@dataclass(frozen=True)
class MemoryMeasure:
    peak_bytes: int
    method: str  # FRESH_PROCESS or CUDA_MAX_ALLOCATED

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


class CudaPeakMemory:
    """Context manager: `torch.cuda.max_memory_allocated` over the block, on a CUDA device.

    On any other device it measures nothing (`peak_bytes` None, `method` "unavailable"): a CPU
    run's peak is measured by `generation_peak`, in a fresh process.
    """

    def __init__(self, device: Any = "cpu"):
        import torch

        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self.method = CUDA_MAX_ALLOCATED if self.device.type == "cuda" else UNAVAILABLE

    def __enter__(self) -> "CudaPeakMemory":
        if self.method == CUDA_MAX_ALLOCATED:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.method == CUDA_MAX_ALLOCATED:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))


class TensorPeakMemory:
    """Context manager: the peak bytes of tensor storage allocated inside the block and alive at once,
    on any device (`peak_bytes`), counted as PyTorch dispatches each operation.

    The CPU counterpart of `torch.cuda.max_memory_allocated` (without the tensors alive before the block,
    such as the weights): it counts what the run's tensors hold, not the allocator's caches or the
    libraries' own workspaces, which the resident set size includes. Every operation goes through a
    Python dispatch mode, so the block runs several times slower.
    """

    def __init__(self):
        self.peak_bytes = 0
        self._live: dict[int, int] = {}
        self._bytes = 0
        self._mode = None

    def _track(self, tensor) -> None:
        import weakref

        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._live:
            return
        self._live[key] = size
        self._bytes += size
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self._bytes -= self._live.pop(key, 0)

    def __enter__(self) -> "TensorPeakMemory":
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for value in tree_flatten(out)[0]:
                    if isinstance(value, torch.Tensor) and value.device.type != "meta":
                        tracker._track(value)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def _run_fresh(target: str, payload: dict, env: dict | None, timeout: float | None, label: str | None = None) -> dict:
    """Run `target(payload)` in a fresh interpreter; its {"peak_rss_bytes", "result"}."""
    label = label or target
    if ":" not in target:
        raise ValueError(f"target must be 'module:function'; got {target!r}")
    child_env = {**(os.environ if env is None else env), **_CHILD_ENV}
    with tempfile.TemporaryDirectory(prefix="genaccel-memory-") as tmp:
        out = Path(tmp) / "result.json"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, target, str(out)],
                input=json.dumps(payload),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise MemoryMeasureError(f"memory measurement of {label} timed out after {timeout:g} s") from None
        if proc.returncode != 0 or not out.is_file():
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            if proc.returncode < 0:
                why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
            else:
                why = lines[-1] if lines else f"exit status {proc.returncode}, nothing on stderr"
            error = MemoryMeasureError(f"memory measurement of {label} failed: {why}")
            error.stderr = proc.stderr
            raise error
        return json.loads(out.read_text())


def fresh_process_peak(target: str, payload: dict, *, env: dict | None = None, timeout: float | None = None) -> int:
    """Peak RSS, in bytes, of a fresh Python process that calls `module:function`(payload).

    `payload` must be JSON-serializable; the child gets it as a dict. `env` replaces the child's
    environment (default: this process's), e.g. to put a folder on its PYTHONPATH. A child that
    fails raises `MemoryMeasureError` with its last line of stderr.
    """
    return int(_run_fresh(target, payload, env, timeout)["peak_rss_bytes"])


def generation_peak(
    model: str, device: str, request: dict, accel: str, *, env: dict | None = None, timeout: float | None = None
) -> MemoryMeasure:
    """The peak memory of one generation with `accel`, in a fresh process.

    `request` holds `GenerationRequest` fields (prompt, seed, num_frames, ...). On CPU the figure
    is the child's peak RSS (model load included); on CUDA, `torch.cuda.max_memory_allocated`
    over the generation (weights included).
    """
    payload = {"model": model, "device": device, "request": request, "accel": accel}
    report = _run_fresh(f"{__name__}:_generate_once", payload, env, timeout, label=f"{model} with {accel!r}")
    cuda_peak = (report.get("result") or {}).get("cuda_peak_bytes")
    if cuda_peak is not None:
        return MemoryMeasure(int(cuda_peak), CUDA_MAX_ALLOCATED)
    return MemoryMeasure(int(report["peak_rss_bytes"]), FRESH_PROCESS)


def _generate_once(payload: dict) -> dict:
    """Child side of `generation_peak`: load, prepare, generate once (the path every entry point takes)."""
    import genaccel

    pipe = genaccel.load_pipeline(payload["model"], device=payload["device"])
    from genaccel.generation.request import split_configuration

    spec, overrides = split_configuration(payload["accel"])
    request = genaccel.GenerationRequest(**{**payload["request"], **overrides, "accel": spec})
    prepared = genaccel.prepare(pipe, request)
    with CudaPeakMemory(getattr(pipe, "device", "cpu")) as cuda:
        genaccel.generate(pipe, prepared)
    return {"cuda_peak_bytes": cuda.peak_bytes}


def measure_configs(
    model: str,
    device: str,
    request: dict,
    accels: list[str],
    *,
    path: Path | None = None,
    progress: bool = True,
    timeout: float | None = None,
) -> dict[str, dict]:
    """`generation_peak` of every configuration: {spec: {"peak_memory_bytes", "method"}}.

    With `path` (a sweep's memory.json), what it already holds is kept and each new figure is
    written as soon as it is measured (temporary file, then rename), so an interrupted run resumes.
    """
    from tqdm import tqdm

    measured = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    todo = [spec for spec in accels if spec not in measured]
    for spec in tqdm(todo, desc="peak memory (fresh process)", unit="config", disable=not progress or not todo):
        result = generation_peak(model, device, request, spec, timeout=timeout)
        measured[spec] = {"peak_memory_bytes": result.peak_bytes, "method": result.method}
        if path is not None:
            write_atomic(path, json.dumps(measured, indent=1) + "\n")
    return measured


def _quiet_libraries() -> None:
    import importlib
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    for name in ("diffusers", "transformers"):
        try:
            module = importlib.import_module(f"{name}.utils.logging")
            module.set_verbosity_error()
            module.disable_progress_bar()
        except (ImportError, AttributeError):
            pass


def _child_main() -> None:
    """`python -c ... TARGET RESULT_PATH` with the payload on stdin (see `_run_fresh`)."""
    import importlib

    target, result_path = sys.argv[1], sys.argv[2]
    payload = json.loads(sys.stdin.read())
    try:
        _quiet_libraries()
        module_name, _, function_name = target.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        result = function(payload)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it in one line
        import traceback

        traceback.print_exc()
        message = " ".join(str(exc).split()) or "(no message)"
        print(f"{type(exc).__name__}: {message}", file=sys.stderr, flush=True)
        sys.exit(1)
    write_atomic(Path(result_path), json.dumps({"peak_rss_bytes": peak_rss_bytes(), "result": result}))
