#!/usr/bin/env bash
# genaccel bench from the command line: the embedded model's presets against the baseline on the fixed
# evaluation prompts at the default setting (the "Presets" table of BENCHMARKS.md). Re-running resumes.
# benchmarks/sweep_default.sh is the wider sweep (every accelerator alone at two or more settings); the presets
# themselves are tuned with benchmarks/tune_presets.sh.
set -euo pipefail
genaccel bench --model tiny \
    --accel quality --accel balanced --accel fast \
    --prompts benchmarks/eval_prompts.txt --seeds 0 --setting default \
    --out "${1:-bench-out}"
# Results: bench-out/summary.md (one row per configuration), results.jsonl (every run), pareto.png, compare.mp4
