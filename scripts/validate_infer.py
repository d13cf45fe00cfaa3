"""Dataset inference checked on the lab's own targets (the README's `lab.infer` table).

Fits the target of `configs/references/target.yaml` (64 MNIST members, 448 non-members; other
`lab.fit` options pass through, e.g. `--data.members 1000`) for 120 and 300 epochs, then for
each: the per-example test AUC of each attack (`lab.attack`), and
`lab.infer --simulate` with owner sets drawn from members (power) and from non-members (the
false-positive rate at alpha = 0.05, over `--repeats` sets; a valid test stays at or below alpha
plus its one-sided 95% binomial margin).

    .venv/bin/python scripts/validate_infer.py --out runs/validate_infer     # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/validate_infer")
    ap.add_argument("--config", default=str(ROOT / "configs/references/target.yaml"))
    ap.add_argument("--epochs", type=int, nargs="+", default=[120, 300])
    ap.add_argument("--attacks", nargs="+", default=["loss", "pia", "sima"])
    ap.add_argument("--owner_sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeats", type=int, default=100)
    args, fit_overrides = ap.parse_known_args()  # the rest goes to lab.fit, e.g. --data.members 1000

    from lab import attack, fit, infer
    from lab.targets.load import target_folders

    out = Path(args.out)
    rows = []
    for epochs in args.epochs:
        run = out / f"epochs_{epochs}"
        if not list(run.glob("epoch_*")):
            fit.main(
                [
                    "--config",
                    args.config,
                    "--trainer.default_root_dir",
                    str(run),
                    "--trainer.max_epochs",
                    str(epochs),
                    *fit_overrides,
                ]
            )
        target = target_folders(run)[-1]
        _, table, _ = attack.run(str(target), args.attacks, out=str(run / "attacks"), bootstrap=200)
        aucs = ", ".join(f"{r.attack} {r.auc:.2f}" for _, r in table.iterrows())
        members = int(table.n_members.iloc[0] * 2)  # both halves (validation, test)
        nonmembers = int(table.n_nonmembers.iloc[0] * 2)
        for owner_from in ("members", "nonmembers"):
            for size in args.owner_sizes:
                heldout = min(2 * size, nonmembers - (size if owner_from == "nonmembers" else 0))
                if size > (members if owner_from == "members" else nonmembers // 2):
                    continue
                r = infer.run(
                    str(target),
                    args.attacks,
                    simulate=owner_from,
                    owner_size=size,
                    heldout_size=heldout,
                    repeats=args.repeats,
                    out=str(run / f"infer_{owner_from}_{size}"),
                )
                lo, hi = r["rejection_rate_ci"]
                valid = (
                    "-"
                    if owner_from == "members"
                    else ("yes" if r["rejection_rate"] <= r["valid_fpr_at_most"] else "NO")
                )
                rows.append(
                    f"| {members} | {epochs} | {aucs} | {owner_from} | {size} vs {heldout} "
                    f"| {r['rejection_rate']:.2f} [{lo:.2f}, {hi:.2f}] | "
                    f"{r['median_p_value']:.2g} | {valid} |"
                )
    margin = 0.05 + 1.645 * (0.05 * 0.95 / args.repeats) ** 0.5
    print(
        "\n| members | epochs | per-example test AUC | owner sets from | owner vs held-out "
        f"| rate p < 0.05 over {args.repeats} sets [95% CI] | median p | FPR within alpha + margin ({margin:.3f}) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
