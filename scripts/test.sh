#!/usr/bin/env bash
# The README's second command: set up, then run the whole test suite (CPU, slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
