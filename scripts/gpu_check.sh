#!/usr/bin/env bash
# The GPU check (README, "The GPU path"): run it on a machine with a CUDA device, from a checkout.
# Sets up .venv if needed (on a GPU machine install the CUDA build of torch first), then fits a tiny
# target and compares every attack on CUDA (float32 and 16-mixed) with CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python scripts/gpu_check.py --out "${1:-runs/gpu_check}" --accelerator "${ACCELERATOR:-cuda}"
