#!/usr/bin/env bash
# How the embedded model's calibrated profile and presets (both in pipelines/profiles/tiny.toml) are made:
# one command each. Tuning uses its own prompts and seed (from benchmarks/tune_prompts.txt, seed 100); the
# winners are measured again on held-out prompts (benchmarks/holdout_prompts.txt: every fourth prompt of the
# evaluation set; benchmarks/long_prompts.txt at the long setting).
#   bash benchmarks/tune_presets.sh [OUT_PREFIX]      (about 2 hours on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/tuned}"
profile=pipelines/profiles/tiny.toml
export GENACCEL_PROFILE_DIR="$(mktemp -d)"  # tune from the shipped profile, not a calibration of your own

# 1. TeaCache rescale polynomial, MagCache ratios, token redundancy of this checkpoint (15 prompts).
genaccel calibrate --model tiny --prompts benchmarks/tune_prompts.txt --seeds 100 --out "$profile"

# 2. Computed-step schedules (LeMiCa): the error of every span of up to 6 reused steps, on two prompts
#    (262 generations, about 10 minutes), solved for every budget.
genaccel calibrate --model tiny --schedule --max-span 6 --seeds 100 --out "$profile" \
    --prompt "$(sed -n 1p benchmarks/tune_prompts.txt)" --prompt "$(sed -n 2p benchmarks/tune_prompts.txt)"

# 2b. The same at the long setting, on one prompt with max span 5 (107 generations, about an hour; stopped,
#     it goes on with --resume). Runs at the long setting follow these, others the default setting's.
genaccel calibrate --model tiny --schedule --setting long --max-span 5 --seeds 100 --out "$profile" --resume \
    --prompt "$(sed -n 1p benchmarks/tune_set_long.txt)"

# 3. Presets: one tune per preset and setting. The first tune of a setting searches; the others start from
#    its trial log (same folder) and search a few minutes more for their own budget.
tune() { genaccel tune --model tiny --seeds 100 --profile "$profile" "$@"; }
default=(--setting default --prompts benchmarks/tune_set_default.txt --holdout benchmarks/holdout_prompts.txt
         --out "$out-default")
long=(--setting long --prompts benchmarks/tune_set_long.txt --holdout benchmarks/long_prompts.txt --out "$out-long")
tune "${default[@]}" --min-psnr 30 --max-adherence-drop 2 --minutes 15 --save-as balanced
tune "${default[@]}" --min-psnr 35 --minutes 3 --save-as quality
tune "${default[@]}" --min-psnr 25 --max-adherence-drop 5 --minutes 3 --save-as fast
tune "${long[@]}" --min-psnr 30 --max-adherence-drop 2 --minutes 30 --save-as balanced
tune "${long[@]}" --min-psnr 35 --minutes 0 --save-as quality
tune "${long[@]}" --min-psnr 25 --max-adherence-drop 5 --minutes 3 --save-as fast
