"""Peak memory of one generation: a fresh process per measure on CPU, CUDA's allocator on a GPU."""

import os
from pathlib import Path

import pytest
import torch

from genaccel.errors import GenAccelError
from genaccel.tools.bench.memory import (
    CUDA_MAX_ALLOCATED,
    FRESH_PROCESS,
    UNAVAILABLE,
    CudaPeakMemory,
    MemoryMeasureError,
    fresh_process_peak,
    generation_peak,
)

TESTS = str(Path(__file__).resolve().parent)
HELPERS = str(Path(TESTS) / "helpers")
REQUEST = {"prompt": "a red circle moving left on a black background", "seed": 0}
BUFFER = 300 * 2**20


def _env():
    """This process's environment with tests/helpers/ on PYTHONPATH, for targets in tests/helpers/memory_targets.py."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": HELPERS + (os.pathsep + path if path else "")}


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_fresh_process_peak_sees_a_buffer_allocated_inside_the_run():
    baseline = generation_peak("tiny-wan", "cpu", REQUEST, "none", timeout=300)
    assert baseline.method == FRESH_PROCESS
    assert 50 * 2**20 < baseline.peak_bytes < 8 * 2**30  # interpreter, torch, diffusers and the model
    payload = {"model": "tiny-wan", "device": "cpu", "request": REQUEST, "accel": "none", "buffer_bytes": BUFFER}
    with_buffer = fresh_process_peak("memory_targets:generate_holding_buffer", payload, env=_env(), timeout=300)
    assert abs((with_buffer - baseline.peak_bytes) - BUFFER) < 0.1 * BUFFER, (with_buffer, baseline)


@pytest.mark.slow  # fresh processes, about 6 s each here to start and import torch
def test_a_failing_child_gives_a_one_line_error():
    with pytest.raises(MemoryMeasureError) as info:
        fresh_process_peak("memory_targets:fail", {}, env=_env(), timeout=120)
    message = str(info.value)
    assert isinstance(info.value, GenAccelError)
    assert "\n" not in message
    assert "memory_targets:fail" in message and "ValueError: the target failed on purpose" in message
    assert "Traceback" in info.value.stderr  # the whole traceback stays available


def test_target_must_name_a_function():
    with pytest.raises(ValueError, match="module:function"):
        fresh_process_peak("memory_targets", {})


def test_cuda_peak_measures_nothing_off_cuda():
    with CudaPeakMemory("cpu") as meter:
        torch.ones(1024)
    assert meter.peak_bytes is None and meter.method == UNAVAILABLE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_sees_a_buffer_allocated_inside_the_block():
    device = torch.device("cuda")
    with CudaPeakMemory(device) as empty:
        pass
    with CudaPeakMemory(device) as meter:
        block = torch.ones(BUFFER, dtype=torch.uint8, device=device)
        del block
    assert meter.method == CUDA_MAX_ALLOCATED
    assert abs((meter.peak_bytes - empty.peak_bytes) - BUFFER) < 0.1 * BUFFER


def test_remeasure_script_reads_both_plan_layouts_and_writes_the_bench_memory_file(tmp_path, monkeypatch, capsys):
    import json
    import runpy

    import genaccel.tools.bench.memory as memory

    script = runpy.run_path(str(Path(TESTS).parent / "benchmarks" / "remeasure_memory.py"))
    calls = []

    def fake_peak(model, device, request, accel, timeout=None):  # the measure itself is tested above
        calls.append((model, device, request, accel))
        return memory.MemoryMeasure(100 * 2**20 + len(calls), FRESH_PROCESS)

    monkeypatch.setattr(memory, "generation_peak", fake_peak)
    flat = {
        "model": "tiny",
        "device": "cpu",
        "accels": ["none", "fast"],
        "prompts": ["p1", "p2"],
        "seeds": [3, 4],
        "setting": "long",
        "num_frames": None,
        "height": 32,
        "repeat": 1,
    }
    nested = {**flat, "setting": None, "height": None, "request": {"setting": "long", "height": 32, "accel": "x"}}
    for plan in (flat, nested):
        calls.clear()
        (tmp_path / "memory.json").unlink(missing_ok=True)
        (tmp_path / "bench.json").write_text(json.dumps(plan))
        assert script["main"]([str(tmp_path), "--no-progress"]) == 0
        request = {"prompt": "p1", "seed": 3, "setting": "long", "height": 32}
        assert calls == [("tiny", "cpu", request, "none"), ("tiny", "cpu", request, "fast")]
        measured = json.loads((tmp_path / "memory.json").read_text())
        assert measured == {
            "none": {"peak_memory_bytes": 100 * 2**20 + 1, "method": FRESH_PROCESS},
            "fast": {"peak_memory_bytes": 100 * 2**20 + 2, "method": FRESH_PROCESS},
        }
        assert "| none | 100 | rss_fresh_process |" in capsys.readouterr().out
    calls.clear()
    assert script["main"]([str(tmp_path), "--no-progress"]) == 0 and calls == []  # measured figures are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "memory.json"]  # no temporary left
    assert script["main"]([str(tmp_path / "missing")]) == 2
    assert "no bench.json" in capsys.readouterr().err
