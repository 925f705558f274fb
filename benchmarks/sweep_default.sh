#!/usr/bin/env bash
# Every cache alone at two or more settings, and stacks, on the embedded model at the default setting
# (BENCHMARKS.md, "Every accelerator alone at two or more settings, and stacks"), on the tuning prompts
# (benchmarks/tune_prompts.txt, seed 100), never the evaluation set. The presets were picked by hand from
# this sweep until issue 22; they are now tuned with `genaccel tune` (benchmarks/tune_presets.sh).
#   bash benchmarks/sweep_default.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-tune}"

# 1. TeaCache rescale polynomial and MagCache ratios of this checkpoint.
genaccel calibrate --model tiny --prompts benchmarks/tune_prompts.txt --seeds 100 \
    --out pipelines/profiles/tiny.toml

# 2. Candidates, alone and stacked, against the baseline on the tuning prompts.
genaccel bench --model tiny --prompts benchmarks/tune_prompts.txt --seeds 100 --setting default \
    --accel "teacache(threshold=0.05)" --accel "teacache(threshold=0.1)" \
    --accel "teacache(threshold=0.2)" --accel "teacache(threshold=0.3)" \
    --accel "magcache(threshold=0.1,max_skip=3)" --accel "magcache(threshold=0.25,max_skip=4)" \
    --accel "magcache(threshold=0.4,max_skip=6)" --accel "magcache(threshold=0.6,max_skip=8,retention=0.1)" \
    --accel "fbcache(threshold=0.05)" --accel "fbcache(threshold=0.1)" \
    --accel "taylorseer(interval=2,order=2)" --accel "taylorseer(interval=3,order=2)" \
    --accel "pab(spatial=2,cross=4)" --accel "pab(spatial=3,cross=6)" \
    --accel "cfgcache(interval=2)" --accel "cfgcache(interval=3)" --accel "cfgcache(interval=5)" \
    --accel "teacache(threshold=0.1)+cfgcache(interval=2)" \
    --accel "teacache(threshold=0.2)+cfgcache(interval=3)" \
    --accel "teacache(threshold=0.3)+cfgcache(interval=4)" \
    --accel "magcache(threshold=0.25,max_skip=4)+cfgcache(interval=3)" \
    --accel "magcache(threshold=0.4,max_skip=6)+cfgcache(interval=3)" \
    --accel "magcache(threshold=0.25,max_skip=4)+pab(spatial=2,cross=4)" \
    --accel "magcache(threshold=0.4,max_skip=6)+pab(spatial=2,cross=4)" \
    --accel "teacache(threshold=0.2)+cfgcache(interval=3)+pab(spatial=2,cross=4)" \
    --accel "teacache(threshold=0.3)+cfgcache(interval=6)+taylorseer(interval=2,order=2)" \
    --out "$out"
# 2b. Follow-up candidates around the best stacks of step 2 (MagCache with cfgcache and/or pab).
genaccel bench --model tiny --prompts benchmarks/tune_prompts.txt --seeds 100 --setting default \
    --accel "magcache(threshold=0.5,max_skip=6)" \
    --accel "magcache(threshold=0.3,max_skip=5)+cfgcache(interval=3)" \
    --accel "magcache(threshold=0.4,max_skip=6)+cfgcache(interval=2)" \
    --accel "magcache(threshold=0.5,max_skip=6)+cfgcache(interval=2)" \
    --accel "magcache(threshold=0.5,max_skip=6)+pab(spatial=2,cross=4)" \
    --accel "magcache(threshold=0.4,max_skip=6)+cfgcache(interval=2)+pab(spatial=2,cross=4)" \
    --out "$out-extra"
