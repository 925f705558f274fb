#!/usr/bin/env bash
# Issue 22's caches at both settings, on five prompts (benchmarks/long_prompts.txt, seed 0), with peak memory
# measured in a fresh process per configuration:
# - `schedule` (LeMiCa) against TeaCache and MagCache at about the same share of computed passes: budget 10
#   of 30 steps is LeMiCa's 17 of 50; budget 12 is 40%;
# - `lightcache` (feed-forward in token chunks) alone and under the `balanced` preset, for the memory column.
# About 30 minutes on a 2-core CPU (most of it the long setting).
#   bash benchmarks/sweep_caching.sh [OUT_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-caching}"
for setting in default long; do
    genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting "$setting" \
        --accel "schedule(budget=10)" --accel "schedule(budget=12)" \
        --accel "teacache(threshold=0.2)" --accel "teacache(threshold=0.3)" \
        --accel "magcache(threshold=0.4,max_skip=6)" --accel "magcache(threshold=0.25,max_skip=4)" \
        --accel "lightcache(ffn_chunks=4)" --accel "lightcache(ffn_chunks=8)" \
        --accel balanced --accel "balanced+lightcache(ffn_chunks=4)" \
        --out "$out-$setting"
done
