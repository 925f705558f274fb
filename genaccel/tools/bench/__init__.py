"""`genaccel bench`: speedup against quality, every configuration side by side with the baseline.

    from genaccel.tools.bench import BenchPlan, run_bench
    rows = run_bench(pipe, BenchPlan(accels=["teacache", "balanced"], prompts=[...], seeds=[0, 1]), "bench-out")

Modules: `runner` (the interleaved, resumable sweep), `quality` (PSNR, SSIM, temporal error,
LPIPS), `memory` (peak memory per run), `report` (summary.csv/md, pareto.png, compare.mp4).
"""

from genaccel.tools.bench.report import summarize
from genaccel.tools.bench.runner import BenchPlan, read_memory, run_bench

__all__ = ["BenchPlan", "read_memory", "run_bench", "summarize"]
