"""Re-measure the peak memory of every configuration of a finished bench, in fresh processes.

For each configuration of DIR/bench.json, one generation of the sweep's first prompt and seed runs in
a fresh Python process (`genaccel.tools.bench.memory.generation_peak`): on CPU the figure is that
process's peak RSS (interpreter, libraries, weights and the run), on CUDA
`torch.cuda.max_memory_allocated`. Writes DIR/memory.json, the file `genaccel bench --memory fresh`
writes (measured figures already there are kept: delete it to measure again), and prints a Markdown
table. bench.json files of every layout are read (shared request fields at the top level, or in a
`request` table).

    python benchmarks/remeasure_memory.py benchmarks/results/presets-default
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from genaccel.errors import GenAccelError
from genaccel.tools.bench.memory import measure_configs
from genaccel.tools.bench.runner import MEMORY, PER_RUN

PLAN = "bench.json"


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

    Reads the shared settings from the plan's top level and from a nested `request` table, the
    nested one winning; keeps only GenerationRequest's fields and drops unset (None) values, so
    that the model's defaults apply as they did in the sweep.
    """
    prompts, seeds = plan.get("prompts") or [], plan.get("seeds") or [0]
    if not prompts:
        raise GenAccelError(f"{PLAN} lists no prompts")
    shared = {k: v for k, v in plan.items() if k in fields}
    if isinstance(plan.get("request"), dict):
        shared.update({k: v for k, v in plan["request"].items() if k in fields})
    request = {k: v for k, v in shared.items() if v is not None and k not in PER_RUN}
    request.update(prompt=prompts[0], seed=int(seeds[0]))
    return request


def markdown(measured: dict[str, dict]) -> str:
    lines = ["| accel | peak memory (MB) | method |", "|---|---:|---|"]
    lines += [f"| {accel} | {m['peak_memory_bytes'] / 2**20:.0f} | {m['method']} |" for accel, m in measured.items()]
    return "\n".join(lines)


def remeasure(
    out_dir: Path,
    *,
    model: str | None = None,
    device: str | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    plan = read_plan(out_dir)
    model = model or plan.get("model")
    device = device or plan.get("device") or "cpu"
    accels = plan.get("accels") or []
    if not model:
        raise GenAccelError(f"{PLAN} names no model; pass --model")
    if not accels:
        raise GenAccelError(f"{PLAN} lists no configurations (accels)")
    request = first_request(plan, request_fields())
    return measure_configs(model, device, request, accels, path=out_dir / MEMORY, progress=progress, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python benchmarks/remeasure_memory.py benchmarks/results/presets-default\n\n"
        "Each configuration costs one model load and one generation at the sweep's setting and sizes.",
    )
    parser.add_argument("dir", type=Path, help="a bench output folder (holds bench.json)")
    parser.add_argument("--model", help="model to load instead of bench.json's 'model' (a name, folder or hub id)")
    parser.add_argument("--device", help="device instead of bench.json's 'device' (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="seconds allowed per configuration (default: no limit)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        measures = remeasure(
            args.dir, model=args.model, device=args.device, timeout=args.timeout, progress=not args.no_progress
        )
    except GenAccelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(measures))
    print(f"\nwrote {args.dir / MEMORY}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
