#!/usr/bin/env bash
# Every Wan accelerator alone at two settings, and the three presets, on the embedded model at the
# long setting (128x128, 33 frames: 2,304 video tokens), five prompts (benchmarks/long_prompts.txt).
# One long baseline video takes about 20 s on a 2-core CPU, so this sweep takes about 20 minutes.
#   bash benchmarks/sweep_long.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
genaccel bench --model tiny --prompts benchmarks/long_prompts.txt --seeds 0 --setting long \
    --accel quality --accel balanced --accel fast \
    --accel "teacache(threshold=0.1)" --accel "teacache(threshold=0.2)" \
    --accel "magcache(threshold=0.1,max_skip=3)" --accel "magcache(threshold=0.25,max_skip=4)" \
    --accel "fbcache(threshold=0.05)" --accel "fbcache(threshold=0.1)" \
    --accel "taylorseer(interval=2,order=2)" --accel "taylorseer(interval=3,order=2)" \
    --accel "pab(spatial=2,cross=4)" --accel "pab(spatial=3,cross=6)" \
    --accel "cfgcache(interval=2)" --accel "cfgcache(interval=3)" \
    --out "${1:-bench-long}"
