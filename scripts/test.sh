#!/usr/bin/env bash
# The README's second command: set up, lint, run the whole test suite (CPU, slow tests included),
# then run the kernel-path tests a second time on another CPU kernel path.
#
#   bash scripts/test.sh                 # what CI runs
#   bash scripts/test.sh -m "not slow"   # the fast loop: arguments go to pytest, and only pytest runs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . || {
  echo "lint: run .venv/bin/ruff check --fix . && .venv/bin/ruff format ." >&2
  exit 1
}
.venv/bin/python -m pytest
# Scores compared along two kernel paths (batch sizes, shared calls) must agree on any CPU. torch picks
# its CPU kernels by ATEN_CPU_CAPABILITY, oneDNN and MKL by the instruction set: run those tests again
# as on a CPU without AVX (generic ATen kernels, oneDNN off, MKL capped at SSE4.2), or, where this run
# was already made under ATEN_CPU_CAPABILITY=default, with this CPU's own kernels.
if [ "${ATEN_CPU_CAPABILITY:-}" = default ]; then
  echo "kernel paths: again with this CPU's own kernels"
  env -u ATEN_CPU_CAPABILITY .venv/bin/python -m pytest -m kernel_paths -p no:cacheprovider --durations=5
else
  echo "kernel paths: again under ATEN_CPU_CAPABILITY=default, oneDNN off, MKL at SSE4.2"
  ATEN_CPU_CAPABILITY=default LAB_TEST_MKLDNN=0 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
    .venv/bin/python -m pytest -m kernel_paths -p no:cacheprovider --durations=5
fi
