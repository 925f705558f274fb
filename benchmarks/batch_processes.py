"""A batch in one process against the same batch split across two accelerate-launched processes, on this CPU.

    python benchmarks/batch_processes.py --out benchmarks/results/batch-processes.json

Both runs use the machine's two cores: one process with two threads, or two processes (gloo) with one
thread each. Wall time of the whole command (start-up and model loading included), 8 prompts of the
evaluation set on the embedded model at its default setting, interleaved over --repeat rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = Path(__file__).parent / "eval_prompts.txt"


def run(command: list[str], threads: int, cwd: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    results = {"one process, 2 threads": [], "two processes, 1 thread each": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = [line for line in PROMPTS.read_text().splitlines() if line.strip()][: args.items]
        (tmp / "prompts.txt").write_text("\n".join(prompts) + "\n")
        batch = ["-m", "genaccel", "batch", "prompts.txt", "--model", "tiny", "--device", "cpu", "--json"]
        for round_ in range(args.repeat):
            for label in results:
                out = f"out-{round_}-{len(results[label])}-{label[:3]}"
                if label.startswith("one"):
                    seconds = run([sys.executable, *batch, "--out", out], 2, tmp)
                else:
                    seconds = run(
                        [
                            accelerate,
                            "launch",
                            "--multi_gpu",
                            "--num_processes",
                            "2",
                            "--num_machines",
                            "1",
                            "--mixed_precision",
                            "no",
                            "--dynamo_backend",
                            "no",
                            "--main_process_port",
                            "0",
                            *batch,
                            "--out",
                            out,
                        ],
                        1,
                        tmp,
                    )
                assert len((tmp / out / "manifest.jsonl").read_text().splitlines()) == len(prompts)
                results[label].append(round(seconds, 2))
                print(f"{label}: {seconds:.1f} s", flush=True)
    summary = {label: {"seconds": times, "median": statistics.median(times)} for label, times in results.items()}
    one, two = (summary[label]["median"] for label in results)
    summary["speedup"] = round(one / two, 3)
    summary["items"] = args.items
    print(json.dumps(summary))
    args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
