"""The peak-memory estimate (genaccel.memory.estimate) against measured peaks of the embedded model on this CPU.

For each size, in a fresh process: load the model, take genaccel's estimate of the run (what `genaccel
generate --dry-run` prints), then run it and measure its peak two ways:
- tensors: the peak of tensor storage alive at once during the run (`TensorPeakMemory`, the CPU
  counterpart of torch.cuda.max_memory_allocated) plus the weights, which is what the estimate counts;
- resident set: the process's peak RSS (VmHWM) minus its RSS after loading, plus the weights: what
  the run adds to the machine's memory, libraries' workspaces and allocator caching included.

    python benchmarks/memory_estimate.py --out benchmarks/results/memory-estimate.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

SIZES = [(64, 64, 17), (128, 128, 33), (256, 256, 33)]  # the first is where DECODE_WORKING_MAPS was read off
PROMPT = "a red circle moving left on a black background"


def _rss(field: str) -> int:
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def measure(height: int, width: int, frames: int, steps: int, tracked: bool) -> dict:
    import genaccel
    from genaccel.tools.bench.memory import TensorPeakMemory

    pipe = genaccel.load_pipeline("tiny", device="cpu")
    weights = sum(
        t.numel() * t.element_size()
        for name in ("transformer", "vae", "text_encoder")
        for module in [getattr(pipe, name)]
        for t in (*module.parameters(), *module.buffers())
    )
    request = genaccel.GenerationRequest(
        prompt=PROMPT, height=height, width=width, num_frames=frames, num_inference_steps=steps, accel="none"
    )
    prepared = genaccel.prepare(pipe, request)
    after_load = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak counts from here
    if tracked:
        with TensorPeakMemory() as peak:
            genaccel.generate(pipe, prepared)
        return {"measured_bytes": peak.peak_bytes + weights, "estimate": prepared.memory.to_dict()}
    genaccel.generate(pipe, prepared)
    return {"measured_bytes": _rss("VmHWM") - after_load + weights, "estimate": prepared.memory.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (the peak does not grow with them)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        h, w, f, steps, tracked = map(int, args.child)
        print(json.dumps(measure(h, w, f, steps, bool(tracked))))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}  # see genaccel.tools.bench.memory
    rows = []
    for h, w, f in SIZES:
        row = {"height": h, "width": w, "num_frames": f}
        for tracked, label in ((1, "tensors"), (0, "resident")):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--out",
                    str(args.out),
                    "--child",
                    str(h),
                    str(w),
                    str(f),
                    str(args.steps),
                    str(tracked),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            row[f"{label}_bytes"] = result["measured_bytes"]
            row["estimate"] = result["estimate"]
        estimate = row["estimate"]["peak_bytes"]
        row["error_vs_tensors"] = round(estimate / row["tensors_bytes"] - 1, 4)
        row["error_vs_resident"] = round(estimate / row["resident_bytes"] - 1, 4)
        rows.append(row)
        print(
            f"{h}x{w}x{f}: estimate {estimate / 1e6:.1f} MB, tensors {row['tensors_bytes'] / 1e6:.1f} MB "
            f"({row['error_vs_tensors']:+.1%}), resident {row['resident_bytes'] / 1e6:.1f} MB "
            f"({row['error_vs_resident']:+.1%})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"model": "tiny", "steps": args.steps, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
