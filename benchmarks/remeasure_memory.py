"""Re-measure the peak memory of every configuration of a finished bench, in fresh processes.

For each configuration of DIR/bench.json, one generation of the sweep's first prompt and seed runs in
a fresh Python process (`genaccel.bench.memory.generation_peak`): on CPU the figure is that
process's peak RSS (interpreter, libraries, weights and the run), on CUDA
`torch.cuda.max_memory_allocated`. Writes DIR/memory.csv (accel, peak_memory_bytes, peak_memory_mb,
method) and prints a Markdown table.

    python benchmarks/remeasure_memory.py benchmarks/results/presets-default
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from genaccel.bench.memory import MemoryMeasure, generation_peak
from genaccel.errors import GenAccelError

PLAN = "bench.json"
OUTPUT = "memory.csv"
COLUMNS = ("accel", "peak_memory_bytes", "peak_memory_mb", "method")
# bench.json keys that are not request fields, or that vary within a sweep.
_NOT_SHARED = {"prompt", "seed", "accel"}


def read_plan(out_dir: Path) -> dict:
    path = out_dir / PLAN
    if not path.is_file():
        raise GenAccelError(f"{out_dir} holds no {PLAN}: not a bench output folder")
    return json.loads(path.read_text())


def request_fields() -> set[str]:
    import genaccel

    return {f.name for f in dataclasses.fields(genaccel.GenerationRequest)}


def first_request(plan: dict, fields: set[str]) -> dict:
    """The request of the sweep's first run (first prompt, first seed), without the accelerator.

    Reads the shared settings from the plan's top level (older bench.json) and from a nested
    `request` table (newer), the nested one winning; keeps only GenerationRequest's fields and
    drops unset (None) values, so that the model's defaults apply as they did in the sweep.
    """
    prompts, seeds = plan.get("prompts") or [], plan.get("seeds") or [0]
    if not prompts:
        raise GenAccelError(f"{PLAN} lists no prompts")
    shared = {k: v for k, v in plan.items() if k in fields}
    if isinstance(plan.get("request"), dict):
        shared.update({k: v for k, v in plan["request"].items() if k in fields})
    request = {k: v for k, v in shared.items() if v is not None and k not in _NOT_SHARED}
    request.update(prompt=prompts[0], seed=int(seeds[0]))
    return request


def write_csv(path: Path, measures: dict[str, MemoryMeasure]) -> None:
    """DIR/memory.csv, written to a temporary file first and renamed into place."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for accel, m in measures.items():
        writer.writerow([accel, m.peak_bytes, f"{m.peak_mb:.1f}", m.method])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def markdown(measures: dict[str, MemoryMeasure]) -> str:
    lines = ["| accel | peak memory (MB) | method |", "|---|---:|---|"]
    lines += [f"| {accel} | {m.peak_mb:.0f} | {m.method} |" for accel, m in measures.items()]
    return "\n".join(lines)


def remeasure(out_dir: Path, *, model: str | None = None, device: str | None = None,
              timeout: float | None = None, progress: bool = True) -> dict[str, MemoryMeasure]:
    plan = read_plan(out_dir)
    model = model or plan.get("model")
    device = device or plan.get("device") or "cpu"
    accels = plan.get("accels") or []
    if not model:
        raise GenAccelError(f"{PLAN} names no model; pass --model")
    if not accels:
        raise GenAccelError(f"{PLAN} lists no configurations (accels)")
    request = first_request(plan, request_fields())
    measures = {}
    for accel in tqdm(accels, desc="peak memory (fresh process)", unit="config", disable=not progress):
        measures[accel] = generation_peak(model, device, request, accel, timeout=timeout)
    write_csv(out_dir / OUTPUT, measures)
    return measures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n    python")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python benchmarks/remeasure_memory.py benchmarks/results/presets-default\n\n"
               "Each configuration costs one model load and one generation at the sweep's setting and sizes.",
    )
    parser.add_argument("dir", type=Path, help="a bench output folder (holds bench.json)")
    parser.add_argument("--model", help="model to load instead of bench.json's 'model' (a name, folder or hub id)")
    parser.add_argument("--device", help="device instead of bench.json's 'device' (cpu, cuda, cuda:1)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds allowed per configuration (default: no limit)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        measures = remeasure(args.dir, model=args.model, device=args.device, timeout=args.timeout,
                             progress=not args.no_progress)
    except GenAccelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(measures))
    print(f"\nwrote {args.dir / OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
