#!/usr/bin/env bash
# The README's first command: set up, then run the over-training study on bundled MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m lab.study --config configs/study/mnist.yaml "$@"
echo
echo "Report, one page (open in a browser): reports/mnist_study/report/index.html"
echo "Tables and plots: reports/mnist_study/report/ (table.md, table_seeds.csv, *.png)"
echo "Targets, split.json and scores per arm and seed: reports/mnist_study/{no_shift,shift}/seed_N/"
echo "TensorBoard (loss, live MIA AUC, samples, attack metrics): .venv/bin/tensorboard --logdir reports/mnist_study"
