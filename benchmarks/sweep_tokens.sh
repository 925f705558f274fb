#!/usr/bin/env bash
# Token reduction (asymrnr) on the embedded model at both settings, five prompts: alone at two reductions
# and stacked with the `balanced` preset. (It does not stack with sparse attention: see `genaccel list`.)
# About 15 minutes on a 2-core CPU.
#   bash benchmarks/sweep_tokens.sh [OUT_DIR_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-tokens}"
for setting in default long; do
    genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting "$setting" --memory off \
        --accel balanced \
        --accel "asymrnr(q_ratio=0.3,kv_ratio=0.3)" --accel "asymrnr(q_ratio=0.5,kv_ratio=0.5)" \
        --accel "balanced+asymrnr(q_ratio=0.3,kv_ratio=0.3)" --accel "balanced+asymrnr(q_ratio=0.5,kv_ratio=0.5)" \
        --out "$out-$setting"
done
