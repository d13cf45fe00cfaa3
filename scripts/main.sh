#!/usr/bin/env bash
# The README's first command: set up, then run the over-training study on bundled MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m lab.study --config configs/study/mnist.yaml "$@"
echo
echo "Report (table.md, AUC/TPR vs epochs, ROC at first and last export): reports/mnist_study/report/"
echo "Targets, split.json and scores per arm: reports/mnist_study/{no_shift,shift}/"
echo "TensorBoard (loss, live MIA AUC, samples, attack metrics): .venv/bin/tensorboard --logdir reports/mnist_study"
