"""LiRA and RMIA side by side at K = 2, 4, 8 reference targets (the README's reference-attack table).

Fits the target of `configs/references/target.yaml` (64 MNIST members out of a pool of 512), 8
reference targets on balanced draws of the same pool (`lab.fit.fit_references`), then attacks the
target with `loss` (no references) and with `lira` and `rmia` on the first K references, and prints
a Markdown table of test AUC with its 95% bootstrap interval, TPR@1%FPR and denoiser calls.

    .venv/bin/python scripts/lira_vs_rmia.py --out runs/lira_vs_rmia      # about 8 minutes on 2 cores

Everything is kept under --out: a rerun reuses the fitted target and references.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lira_vs_rmia")
    ap.add_argument("--config", default=str(ROOT / "configs/references/target.yaml"))
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--bootstrap", type=int, default=500)
    args = ap.parse_args()

    from lab import attack, fit
    from lab.targets.load import target_folders

    out = Path(args.out)
    if not (out / "target" / "split.json").is_file() or not list((out / "target").glob("epoch_*")):
        fit.main(["--config", args.config, "--trainer.default_root_dir", str(out / "target")])
    refs = out / "references"
    have = sorted(p for p in refs.glob("ref_*") if list(p.glob("epoch_*")))
    if len(have) < max(args.ks):
        fit.fit_references(out / "target" / "split.json", args.config, max(args.ks), refs)
    target = target_folders(out / "target")[-1]
    spec = {"loss": {"timesteps": [100], "num_noise": 4}}
    for k in args.ks:
        for name in ("lira", "rmia"):
            spec[f"{name}/k{k}"] = {"references": str(refs), "num_references": k, "timesteps": [100], "num_noise": 4}
    mode = modes(out / "target" / "split.json", refs, args.ks)
    _, table, _ = attack.run(str(target), spec, out=str(out / "attacks"), bootstrap=args.bootstrap)
    print("\n| attack | K | mode | test AUC [95% CI] | TPR@1%FPR [95% CI] | TPR@5%FPR | calls / example |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for _, r in table.iterrows():
        name, _, k = r.attack.partition("/k")
        print(
            f"| {name} | {k or 0} | {mode[int(k)] if k else '-'} | {r.auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}] | "
            f"{r['tpr@0.01fpr']:.3f} [{r['tpr@0.01fpr_lo']:.3f}, {r['tpr@0.01fpr_hi']:.3f}] | "
            f"{r['tpr@0.05fpr']:.3f} | "
            f"{r.calls_per_example:g} |"
        )


def modes(target_split: Path, refs: Path, ks: list[int]) -> dict[int, str]:
    """Online or offline at each K, by the attacks' rule: online when every example is in and out of
    at least one of the first K references."""
    from lab.data.split import MembershipSplit

    ids = MembershipSplit.load(target_split).ids
    runs = sorted(p for p in refs.glob("ref_*") if p.is_dir())
    ins = []
    for run in runs:
        split = MembershipSplit.load(run / "split.json")
        role = dict(zip(split.ids, split.roles))
        ins.append([role[i] == "member" for i in ids])
    out = {}
    for k in ks:
        n_in = [sum(col) for col in zip(*ins[:k])]
        out[k] = "online" if min(n_in) >= 1 and max(n_in) <= k - 1 else "offline"
    return out


if __name__ == "__main__":
    main()
