#!/usr/bin/env bash
# Sparse attention end to end on the embedded model at the long setting (128x128, 33 frames: 2,304 video
# tokens in 18 blocks of 128), five prompts (benchmarks/long_prompts.txt): every method alone with the
# default warm-up (first 6 of 30 steps and first of 8 layers dense) and with 10 dense steps, and each
# stacked with the `balanced` preset; the three cache presets alone for reference. About 35 minutes on a
# 2-core CPU.
#   bash benchmarks/sweep_sparse.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting long --memory off \
    --accel quality --accel balanced --accel fast \
    --accel "svg(density=0.25)" --accel "svg(density=0.25,dense_steps=10)" \
    --accel "radial(density=0.25)" --accel "radial(density=0.25,dense_steps=10)" \
    --accel "sta(density=0.25)" --accel "sta(density=0.25,dense_steps=10)" \
    --accel "topk(threshold=0.6)" --accel "topk(threshold=0.6,dense_steps=10)" \
    --accel "balanced+svg(density=0.25,dense_steps=10)" --accel "balanced+radial(density=0.25,dense_steps=10)" \
    --accel "balanced+sta(density=0.25,dense_steps=10)" --accel "balanced+topk(threshold=0.6,dense_steps=10)" \
    --out "${1:-bench-sparse}"
