#!/usr/bin/env bash
# Sparse attention end to end on the embedded model at the long setting (128x128, 33 frames: 2,304 video
# tokens in 18 blocks of 128), five prompts (benchmarks/long_prompts.txt): every method alone at two
# densities (top-k: two thresholds), each stacked with the `balanced` preset, and `balanced` alone.
# Every method keeps its defaults otherwise: first 6 of 30 steps and first of 8 layers dense.
# About 20 minutes on a 2-core CPU.
#   bash benchmarks/sweep_sparse.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting long \
    --accel balanced \
    --accel "svg(density=0.25)" --accel "svg(density=0.1)" \
    --accel "radial(density=0.25)" --accel "radial(density=0.1)" \
    --accel "sta(density=0.25)" --accel "sta(density=0.1)" \
    --accel "topk(threshold=0.8)" --accel "topk(threshold=0.6)" \
    --accel "balanced+svg(density=0.25)" --accel "balanced+radial(density=0.25)" \
    --accel "balanced+sta(density=0.25)" --accel "balanced+topk(threshold=0.8)" \
    --out "${1:-bench-sparse}"
