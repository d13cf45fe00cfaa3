#!/usr/bin/env bash
# Create .venv (Python 3.11) with the CPU build of torch and the lab installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip's notes about package-index locations this machine's pip config names but lacks are not the lab's: dropped
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
quiet .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
