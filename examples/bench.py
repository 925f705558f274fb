"""Measure accelerators against the baseline from Python: the same sweep as `genaccel bench`.

    python examples/bench.py [--model tiny] [--out bench-example]

Runs the baseline and two configurations on three prompts and two seeds, interleaved, then prints
the summary rows (speedup, PSNR, SSIM, adherence) and where the report files are.
"""

import argparse

import genaccel
from genaccel.tools.bench import BenchPlan, run_bench, summarize

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument(
    "--model", default=None, help="built-in name, local folder or hub id (default: the built-in default)"
)
parser.add_argument("--out", default="bench-example", help="output folder (re-running resumes)")
args = parser.parse_args()

pipe = genaccel.load_pipeline(args.model)
plan = BenchPlan(
    accels=["teacache(threshold=0.1)", "balanced"],  # the baseline "none" is always added first
    prompts=[
        "a red circle moving left on a black background",
        "a blue square moving up on a gray background",
        "a yellow triangle standing still on a black background",
    ],
    seeds=[0, 1],
)
rows = run_bench(pipe, plan, args.out)  # writes results.jsonl, summary.csv/md, pareto.png, compare.mp4
for row in summarize(rows, plan):
    psnr = "-" if row["psnr"] is None else f"{row['psnr']:.1f} dB"
    adherence = "-" if row["adherence"] is None else f"{row['adherence']:.0%}"
    print(f"{row['accel']:28s} {row['speedup']:.2f}x  PSNR {psnr:9s} adherence {adherence}")
print(f"report in {args.out}/")
