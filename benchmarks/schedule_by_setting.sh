#!/usr/bin/env bash
# Schedules calibrated at the long setting itself against the default setting's, used at the long setting,
# at the same budgets (computed passes of 30 per CFG branch), on the five held-out long prompts (seed 100).
# `schedule(budget=N)` at the long setting follows [schedule.long.steps30] of the shipped profile; the default
# setting's schedule of the same budget is given as an explicit step list.
# About 12 minutes on a 2-core CPU.
#   bash benchmarks/schedule_by_setting.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-schedule-by-setting}"
export GENACCEL_PROFILE_DIR="$(mktemp -d)"  # the shipped profile, not a calibration of your own
default_steps() {  # the default setting's calibrated 30-step schedule of budget $1, as "0;1;3;..."
    python -c "import sys, tomllib; t = tomllib.load(open('pipelines/profiles/tiny.toml', 'rb'))
print(';'.join(map(str, t['schedule']['default']['steps30']['computed' + sys.argv[1]])))" "$1"
}
accels=()
for budget in 8 11 14; do
    accels+=(--accel "schedule(budget=$budget)" --accel "schedule(steps=[$(default_steps "$budget")])")
done
genaccel bench --model tiny --setting long --prompts benchmarks/long_prompts.txt --seeds 100 "${accels[@]}" \
    --out "$out"
