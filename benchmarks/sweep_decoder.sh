#!/usr/bin/env bash
# The light decoder on the embedded model (issue 34): the full decode against the light one, alone and under
# `balanced`, at both settings, every PSNR against the baseline's full decode; then previews and streams.
# Default setting: the 12 held-out prompts (about 4 minutes on a 2-core CPU); long setting: the first three
# held-out prompts (about 6 minutes); then benchmarks/light_decoder.py (about 8 minutes).
#   bash benchmarks/sweep_decoder.sh [OUT_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/decoder}"
export GENACCEL_PROFILE_DIR="$(mktemp -d)"  # the shipped profile and presets, not a calibration of your own
configs=(--accel "none; decoder=light" --accel balanced --accel "balanced; decoder=light")
genaccel bench --model tiny --prompts benchmarks/holdout_prompts.txt --memory off "${configs[@]}" --out "$out-default"
genaccel bench --model tiny --setting long --memory off "${configs[@]}" \
    --prompt "$(sed -n 1p benchmarks/holdout_prompts.txt)" --prompt "$(sed -n 2p benchmarks/holdout_prompts.txt)" \
    --prompt "$(sed -n 3p benchmarks/holdout_prompts.txt)" --out "$out-long"
python benchmarks/light_decoder.py --out "$out-extra.json"
