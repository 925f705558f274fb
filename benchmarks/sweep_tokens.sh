#!/usr/bin/env bash
# Token reduction on the embedded model at both settings, five prompts (benchmarks/long_prompts.txt, seed 0):
# tome at two ratios, with more dense steps (uniform and calibrated schedule), with the feed-forward; asymrnr
# at two ratios in the same run;
# tome stacked with the `balanced` preset. (Neither stacks with sparse attention: see `genaccel list`.)
# About 25 minutes on a 2-core CPU.
#   bash benchmarks/sweep_tokens.sh [OUT_DIR_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-tokens}"
for setting in default long; do
    genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting "$setting" --memory off \
        --accel balanced \
        --accel "tome(ratio=0.3)" --accel "tome(ratio=0.5)" --accel "tome(ratio=0.5,dense_steps=8)" \
        --accel "tome(ratio=0.5,dense_steps=8,schedule=profile)" --accel "tome(ratio=0.5,ffn=true)" \
        --accel "asymrnr(q_ratio=0.3,kv_ratio=0.3)" --accel "asymrnr(q_ratio=0.5,kv_ratio=0.5)" \
        --accel "balanced+tome(ratio=0.3)" --accel "balanced+tome(ratio=0.5,dense_steps=8)" \
        --out "$out-$setting"
done
