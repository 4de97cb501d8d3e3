#!/usr/bin/env bash
# The GPU check: AMP training, TensorRT fp16 export + parity with eager, CUDA-synchronised latency against
# torchvision's eager Mask R-CNN. Under 8 minutes on one GPU. Run from anywhere: bash bench/gpu_check.sh
# Where the package is not installed (a bare GPU machine with torch present), src/ is put on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout 470 python3 bench/gpu_check.py "$@"
