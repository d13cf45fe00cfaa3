"""The GPU path: fit a tiny target, run every attack on an accelerator in float32 and 16-mixed, and
compare each with a CPU run (Spearman rank correlation of the scores, AUC difference), with
examples/s. `scripts/gpu_check.sh` runs it; `--accelerator cpu` is a dry run of the same code.

    .venv/bin/python scripts/gpu_check.py --out runs/gpu_check                  # cuda
    .venv/bin/python scripts/gpu_check.py --out runs/gpu_check --accelerator cpu --precisions 32-true
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_REFERENCES = {"lira", "rmia", "clid", "clid_th", "clid_vec"}  # and clid: text-to-image targets only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument("--accelerator", default="cuda")
    ap.add_argument("--precisions", nargs="+", default=["32-true", "16-mixed"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument(
        "--config",
        default=str(ROOT / "configs/ddpm_tiny.yaml"),
        help="the fit config of the target (default: the tiny smoke target)",
    )
    ap.add_argument("--attacks", nargs="*", default=None, help="default: every attack that needs no reference targets")
    args = ap.parse_args()

    import numpy as np
    from scipy.stats import spearmanr

    from lab import fit, metrics
    from lab.attacks import ATTACKS, make_attacks
    from lab.scoring import score_target
    from lab.targets.load import load_target, target_folders

    out = Path(args.out)
    if not list((out / "target").glob("epoch_*")):
        fit.main(
            [
                "--config",
                args.config,
                "--trainer.default_root_dir",
                str(out / "target"),
                "--trainer.max_epochs",
                str(args.epochs),
                "--trainer.accelerator",
                args.accelerator,
            ]
        )
    target = load_target(target_folders(out / "target")[-1])
    names = args.attacks or [a for a in ATTACKS if a not in NEEDS_REFERENCES]
    cpu = score_target(target, make_attacks(names), trainer_kwargs={"accelerator": "cpu"})
    print("\n| attack | precision | Spearman vs CPU | AUC CPU | AUC device | examples/s CPU | examples/s device |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for precision in args.precisions:
        start = time.perf_counter()
        dev = score_target(
            target,
            make_attacks(names),
            trainer_kwargs={"accelerator": args.accelerator, "devices": 1, "precision": precision},
        )
        for name in names:
            a, b = (t[t.attack == name].sort_values("id") for t in (cpu, dev))
            test = a.split == "test"
            m = (a.role == "member").to_numpy()[test.to_numpy()]
            auc_a, auc_b = metrics.auc(a.score[test].to_numpy(), m), metrics.auc(b.score[test].to_numpy(), m)
            rho = spearmanr(a.score, b.score).statistic if a.score.nunique() > 1 else np.nan
            print(
                f"| {name} | {precision} | {rho:.4f} | {auc_a:.3f} | {auc_b:.3f} "
                f"| {a.examples_per_s.iloc[0]:.0f} | {b.examples_per_s.iloc[0]:.0f} |"
            )
        print(f"({precision}: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
