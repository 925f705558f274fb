#!/usr/bin/env bash
# Install genaccel into the current Python environment.
#   bash install.sh          # the package
#   bash install.sh test     # the package, its test dependencies and the linters CI runs
#   bash install.sh cuda     # the package and xformers (CUDA machines)
#   bash install.sh quant    # the package and torchao (the quant accelerator)
# A torch that is already installed (CPU or CUDA) is left alone. Without one, the CPU build
# torch==2.13.0 is installed first (on this project's machines it is a local wheel), so that
# the package's `torch>=2.4` floor does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install "torch==2.13.0"
fi
extras="${1:-}"
if [ -n "$extras" ]; then
    "$PY" -m pip install -e ".[$extras]"
else
    "$PY" -m pip install -e .
fi
