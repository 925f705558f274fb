#!/usr/bin/env bash
# compile and quant on the embedded model, alone and stacked on the presets, at both settings (issue 33); then
# the compiled unit (whole model or each block) at both settings.
# Default setting: the 12 held-out prompts (about 8 minutes on a 2-core CPU); long setting: the first two
# long prompts (about 10 minutes). Compilation happens in each configuration's untimed warm-up; its time is
# the `compile_seconds` column of results.jsonl. `TUNED_DEFAULT` / `TUNED_LONG` add the tuner's stacks.
#   bash benchmarks/sweep_systems.sh [OUT_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/systems}"
export GENACCEL_PROFILE_DIR="$(mktemp -d)"  # the shipped profile and presets, not a calibration of your own
systems=(--accel compile --accel quant --accel "quant+compile"
         --accel "balanced+compile" --accel "balanced+quant+compile" --accel "fast+quant+compile")
genaccel bench --model tiny --prompts benchmarks/holdout_prompts.txt --memory off "${systems[@]}" \
    ${TUNED_DEFAULT:+--accel="$TUNED_DEFAULT"} --out "$out-default"
genaccel bench --model tiny --setting long --prompt "$(sed -n 1p benchmarks/long_prompts.txt)" \
    --prompt "$(sed -n 2p benchmarks/long_prompts.txt)" --memory off \
    --accel compile --accel "quant+compile" --accel "balanced+quant+compile" --accel "fast+quant+compile" \
    ${TUNED_LONG:+--accel="$TUNED_LONG"} --out "$out-long"
genaccel bench --model tiny --prompts benchmarks/holdout_prompts.txt --memory off \
    --accel "compile(scope=blocks)" --accel "compile(scope=model)" --accel "quant+compile(scope=blocks)" \
    --accel "quant+compile(scope=model)" --accel "quant(activations=none)+compile(scope=model)" --out "$out-scope-default"
genaccel bench --model tiny --setting long --prompt "a red ball bouncing on a green floor" --memory off \
    --accel "compile(scope=blocks)" --accel "compile(scope=model)" --accel "quant+compile(scope=blocks)" \
    --out "$out-scope-long"
