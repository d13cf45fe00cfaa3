#!/usr/bin/env bash
# The README's first command: set up, then run the lab's main job on bundled MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m lab.fit --config configs/ddpm_mnist.yaml "$@"
echo
echo "Targets (diffusers layout, one folder per scheduled epoch) and split.json: checkpoints/ddpm_mnist/"
echo "TensorBoard: .venv/bin/tensorboard --logdir checkpoints/ddpm_mnist/tensorboard"
