"""Train K reference targets for LiRA on draws from a target's example pool.

The pool is every example of the target's split (members and non-members). Reference j is
trained with `lab.fit`, on the same fit config as the target, on as many pool examples as the
target has members, drawn so that every example is "in" about K x members / pool references;
its own split file (written at fit time) says which. See `lab.attacks.lira`.

    .venv/bin/python scripts/train_references.py --split reports/mnist_study/no_shift/seed_0/split.json \\
        --config configs/study/ddpm_mnist_fit.yaml --k 8 --out reports/mnist_study/references
    .venv/bin/python -m lab.attack --target reports/mnist_study/no_shift/seed_0/epoch_0700 \\
        --attacks '{lira: {references: reports/mnist_study/references}, loss: {}}'
"""

from __future__ import annotations

import argparse

from lab.fit import fit_references


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", required=True, help="the target's split.json: its examples are the pool")
    ap.add_argument("--config", required=True, help="the lab.fit config the target was trained with")
    ap.add_argument("--k", type=int, default=8, help="number of reference targets (>= 2)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args, overrides = ap.parse_known_args()  # the rest goes to lab.fit, e.g. --trainer.max_epochs 300
    for run in fit_references(args.split, args.config, args.k, args.out, args.seed, overrides):
        print(f"reference: {run}", flush=True)


if __name__ == "__main__":
    main()
