"""`python -m lab.study`: the over-training study in one command.

    python -m lab.study --config configs/study/mnist.yaml

For each arm (e.g. no shift, and non-members from another source): train a target with
`lab.fit` on the arm's fit config, exporting it along a schedule of epochs (and logging live MIA
AUC to TensorBoard), attack every export with every configured attack through `lab.attack`, then
write one report folder:

    <out>/report/table.csv, table.md   arm x attack x epoch: AUC, TPR@1%FPR, two-stage test TPR/FPR
    <out>/report/auc_vs_epochs.png     per arm, one line per attack (log-scale epochs)
    <out>/report/tpr_vs_epochs.png     the same for TPR@1%FPR
    <out>/report/roc_<arm>.png         ROC curves at the first and the last export
    <out>/<arm>/                       the targets, split.json, attacks/ (scores.csv, ...), TensorBoard logs

Each step reads what the one before wrote (split -> fit -> targets -> scores -> report).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import pandas as pd
from jsonargparse import ActionConfigFile, ArgumentParser
from matplotlib.figure import Figure

from lab import attack as lab_attack
from lab import fit as lab_fit
from lab.errors import LabError, ShortErrors, exit_on_lab_error, sigterm_is_an_error
from lab.locks import folder_lock
from lab.report import roc_figure, write_csv_atomic

TABLE_COLUMNS = {
    "arm": "arm", "attack": "attack", "epoch": "epoch", "auc": "AUC", "auc_lo": "AUC lo", "auc_hi": "AUC hi",
    "tpr@0.01fpr": "TPR@1%FPR", "tpr@0.01fpr_lo": "TPR lo", "tpr@0.01fpr_hi": "TPR hi", "two_stage@0.01_test_tpr": "2-stage test TPR@1%", "two_stage@0.01_test_fpr": "2-stage test FPR",
    "n_members": "test members", "n_nonmembers": "test non-members",
}


def fit_arm(fit_config: str, root: Path, overrides: dict) -> None:
    """Fit an arm's target; a rerun after a kill resumes from the arm's last.ckpt (a finished fit
    then only reloads it: its exports are already there)."""
    args = ["--config", fit_config, "--trainer.default_root_dir", str(root)]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    if (root / lab_fit.CHECKPOINT_DIR / "last.ckpt").is_file():
        print(f"[{root.name}] resuming from {root / lab_fit.CHECKPOINT_DIR / 'last.ckpt'}", flush=True)
        args += ["--ckpt_path", "last"]
    lab_fit.main(args)


def markdown_table(df: pd.DataFrame) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def report(tables: dict[str, pd.DataFrame], scores: dict[str, pd.DataFrame], out: Path) -> pd.DataFrame:
    """Study table and plots from each arm's metrics and scores tables."""
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat([t.assign(arm=arm) for arm, t in tables.items()], ignore_index=True)
    table = table[list(TABLE_COLUMNS)].sort_values(["arm", "attack", "epoch"], kind="stable")
    write_csv_atomic(table, out / "table.csv")
    (out / "table.md").write_text(markdown_table(table.rename(columns=TABLE_COLUMNS)))
    colors = {a: f"C{i % 10}" for i, a in enumerate(sorted(table.attack.unique()))}  # one colour per attack in every panel
    for metric, name, chance in (("auc", "auc_vs_epochs", 0.5), ("tpr@0.01fpr", "tpr_vs_epochs", 0.01)):
        fig = Figure(figsize=(5 * len(tables), 4))
        axes = fig.subplots(1, len(tables), squeeze=False, sharey=True)
        for ax, (arm, t) in zip(axes[0], table.groupby("arm", sort=False)):
            for attack, g in t.groupby("attack", sort=False):
                ax.plot(g.epoch, g[metric], marker="o", color=colors[attack], label=attack)
                ax.fill_between(g.epoch, g[f"{metric}_lo"], g[f"{metric}_hi"], color=colors[attack], alpha=0.12, lw=0)
            ax.axhline(chance, color="k", ls="--", lw=0.8)
            epochs = sorted(t.epoch.dropna().unique())
            ax.set(xscale="log", xlim=(min(epochs) / 1.5, max(epochs) * 1.5), ylim=(-0.02, 1.02), xlabel="epochs (log scale)",
                   ylabel=f"test {TABLE_COLUMNS[metric]} (95% bootstrap band)", title=arm)
            ax.set_xticks(epochs, [str(int(e)) for e in epochs])
            ax.minorticks_off()
            if t[metric].isna().all():
                ax.text(0.5, 0.5, "not measurable:\nfewer than 100 test non-members", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
    for arm, s in scores.items():
        first, last = s.epoch.min(), s.epoch.max()
        fig = Figure(figsize=(9, 4.5))
        axes = fig.subplots(1, 2)
        for ax, epoch in zip(axes, (first, last)):
            roc_figure(s[s.epoch == epoch], f"{arm}: epoch {epoch}", ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"roc_{arm}.png", dpi=120)
    return table


def arm_plan(arm: str, spec: dict | None, attacks: dict, fit_config: str) -> tuple[str, dict, dict]:
    """An arm's (lab.fit config, overrides, attacks), or a LabError naming what is wrong with it."""
    spec = spec or {}
    unknown = set(spec) - {"fit_config", "fit", "attacks"}
    if unknown:
        raise LabError(
            f"study arm {arm!r}: unknown keys {sorted(unknown)}; an arm has 'fit_config', 'fit' (lab.fit overrides) and 'attacks'"
        )
    config = spec.get("fit_config") or fit_config
    if not Path(config).is_file():
        raise LabError(f"study arm {arm!r}: fit config not found: {config}")
    names = spec.get("attacks") or list(attacks)
    missing = [n for n in names if n not in attacks]
    if missing:
        raise LabError(f"study arm {arm!r}: attacks {missing} are not among the study's attacks")
    return config, spec.get("fit") or {}, {n: attacks[n] for n in names}


def run_study(fit_config: str, arms: dict, attacks: dict | list, out: str, batch_size: int = 64, bootstrap: int = 200) -> pd.DataFrame:
    """Each arm: `{fit_config: its own lab.fit YAML, fit: {lab.fit overrides}, attacks: subset}` (all optional)."""
    out_dir = Path(out)
    attacks = {n: {} for n in attacks} if isinstance(attacks, list) else attacks
    plans = {arm: arm_plan(arm, spec, attacks, fit_config) for arm, spec in arms.items()}  # all checked before any training
    tables, scores = {}, {}
    for arm, (config, overrides, arm_attacks) in plans.items():
        root = out_dir / arm
        start = time.perf_counter()
        fit_arm(config, root, overrides)
        print(f"[{arm}] fit: {time.perf_counter() - start:.0f} s", flush=True)
        start = time.perf_counter()
        scores[arm], tables[arm], _ = lab_attack.run(str(root), arm_attacks, out=str(root / "attacks"), batch_size=batch_size, bootstrap=bootstrap)
        print(f"[{arm}] attacks: {time.perf_counter() - start:.0f} s", flush=True)
    return report(tables, scores, out_dir / "report")


class StudyParser(ShortErrors, ArgumentParser):
    short_prog = "lab.study"


def build_parser() -> ArgumentParser:
    p = StudyParser(prog="python -m lab.study", description="Train targets along an epoch schedule, attack every export, report.")
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--fit_config", type=str, required=True, help="lab.fit YAML (its ScheduledExport sets the epochs)")
    p.add_argument("--arms", type=dict[str, Optional[dict]], default={"no_shift": {}},
                   help="arm name -> {fit_config: another lab.fit YAML, fit: lab.fit overrides, attacks: a subset of --attacks}")
    p.add_argument("--attacks", type=Union[dict[str, Optional[dict]], list[str]], default=["loss", "pia", "blind"])
    p.add_argument("--out", type=str, default="reports/study")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=200)
    return p


def main(args: list[str] | None = None) -> pd.DataFrame:
    cfg = build_parser().parse_args(args)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    resume = "rerun the same command to resume: finished fits, exports and scores are kept"
    with exit_on_lab_error("lab.study"), sigterm_is_an_error(resume), folder_lock(cfg.out, "lab.study"):
        table = run_study(cfg.fit_config, cfg.arms, cfg.attacks, cfg.out, cfg.batch_size, cfg.bootstrap)
    print(table.rename(columns=TABLE_COLUMNS).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nreport: {Path(cfg.out) / 'report'}/  TensorBoard: tensorboard --logdir {cfg.out}")
    return table


if __name__ == "__main__":
    main()
