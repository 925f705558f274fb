#!/usr/bin/env bash
# genaccel bench from the command line: every accelerator alone and the presets against the baseline,
# on the fixed evaluation prompts, at the embedded model's default setting. Re-running resumes.
set -euo pipefail
genaccel bench \
    --accel "teacache(threshold=0.1)" --accel "fbcache(threshold=0.05)" --accel "pab(spatial=2,cross=4)" \
    --accel "taylorseer(interval=3)" --accel quality --accel balanced --accel fast \
    --prompts benchmarks/eval_prompts.txt --seeds 0 --setting default \
    --out "${1:-bench-out}"
# Results: bench-out/summary.md (one row per configuration), results.jsonl (every run), pareto.png, compare.mp4
