"""Turn a scores table into metrics, plots and TensorBoard entries. Reads the table only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend, so notebooks keep theirs
from sklearn.metrics import roc_curve

from lab import metrics
from lab.data.split import write_atomic

GROUP = ["attack", "target", "epoch"]


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    write_atomic(path, df.to_csv(index=False).encode())


def metrics_table(scores: pd.DataFrame, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per (attack, target, epoch): test-split metrics, CIs, validation AUC, two-stage."""
    rows = []
    for key, g in scores.groupby(GROUP, sort=False, dropna=False):
        test, val = g[g.split == "test"], g[g.split == "validation"]
        s, m = test.score.to_numpy(), (test.role == "member").to_numpy()
        row = dict(zip(GROUP, key))
        row.update(n_members=int(m.sum()), n_nonmembers=int((~m).sum()))
        row.update(metrics.summary(s, m))
        row["auc_lo"], row["auc_hi"] = metrics.bootstrap_ci(
            s, m, metrics.auc, bootstrap, seed=seed
        )  # AUC alone: 2x faster than summary()
        row["tpr@0.01fpr_lo"], row["tpr@0.01fpr_hi"] = metrics.bootstrap_ci(
            s, m, lambda a, b: metrics.tpr_at_fpr(a, b, 0.01), bootstrap, seed=seed
        )
        vs, vm = val.score.to_numpy(), (val.role == "member").to_numpy()
        row["val_auc"] = metrics.summary(vs, vm)["auc"]
        for f in (0.01, 0.001):
            ts = metrics.two_stage(vs, vm, s, m, f)
            row[f"two_stage@{f:g}_test_tpr"], row[f"two_stage@{f:g}_test_fpr"] = ts["test_tpr"], ts["test_fpr"]
        row["calls_per_example"] = float(g.calls_per_example.iloc[0])
        row["grads_per_example"] = float(g.grads_per_example.iloc[0])
        if "calls_reused_per_example" in g:  # served by an identical call of an earlier attack on this target
            row["calls_reused_per_example"] = float(g.calls_reused_per_example.iloc[0])
        row["setup_calls"] = int(g.setup_calls.iloc[0])
        if "examples_per_s" in g:  # wall seconds of the attack on this target
            row["seconds"] = float(len(g) / g.examples_per_s.iloc[0])
        if "split_fingerprint" in g:
            row["split_fingerprint"] = g.split_fingerprint.iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def roc_figure(scores: pd.DataFrame, title: str, ax=None):
    """ROC curves of the test split on log-log axes, with the chance diagonal (on `ax` if given)."""
    if ax is None:
        ax = Figure(figsize=(4.5, 4.5)).subplots()
    fig = ax.figure
    for attack, g in scores[scores.split == "test"].groupby("attack", sort=False):
        fpr, tpr, _ = roc_curve(g.role == "member", g.score)
        auc = metrics.summary(g.score.to_numpy(), (g.role == "member").to_numpy())["auc"]
        ax.plot(fpr, tpr, label=f"{attack} (AUC {auc:.2f})")
    floor = 1 / max(2, (scores[scores.split == "test"].role == "nonmember").sum())
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    # limits a little past 1, so that a perfect curve (TPR 1 at every FPR) is not hidden on the frame
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(floor, 1.1),
        ylim=(floor, 1.1),
        xlabel="FPR (test)",
        ylabel="TPR (test)",
        title=title,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def histogram_figure(g: pd.DataFrame, title: str):
    """Member vs non-member scores, one panel per evaluation split (never pooled), shared bins."""
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2, sharex=True)
    bins = np.histogram_bin_edges(g.score, bins=30)
    for ax, split in zip(axes, ("validation", "test")):
        part = g[g.split == split]
        for role in ("member", "nonmember"):
            ax.hist(part[part.role == role].score, bins=bins, alpha=0.6, label=f"{role} ({(part.role == role).sum()})")
        ax.set(xlabel="score (higher = member)", ylabel="examples", title=f"{split} split")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


SWEEP_LABEL = re.compile(r"^(?P<attack>.+)/t(?P<t>\d+)$")


def sweep_figure(table: pd.DataFrame, title: str):
    """AUC (with its bootstrap 95% band) and TPR@1%FPR against the timestep, one line per attack
    swept (`<attack>/t<t>` labels), or None when nothing was swept."""
    found = table.attack.str.extract(SWEEP_LABEL)
    rows = table.assign(base=found.attack, t=pd.to_numeric(found.t)).dropna(subset=["t"])
    if rows.empty:
        return None
    fig = Figure(figsize=(9, 3.8))
    ax_auc, ax_tpr = fig.subplots(1, 2, sharex=True)
    for base, g in rows.sort_values("t").groupby("base", sort=False):
        line = ax_auc.plot(g.t, g.auc, marker="o", label=base)[0]
        ax_auc.fill_between(g.t, g.auc_lo, g.auc_hi, color=line.get_color(), alpha=0.15, lw=0)
        ax_tpr.plot(g.t, g["tpr@0.01fpr"], marker="o", color=line.get_color(), label=base)
    ax_auc.axhline(0.5, color="k", ls="--", lw=0.8)
    ax_tpr.axhline(0.01, color="k", ls="--", lw=0.8)
    ax_auc.set(xlabel="timestep t", ylabel="test AUC (95% bootstrap band)", ylim=(0, 1), title=title)
    ax_tpr.set(xlabel="timestep t", ylabel="test TPR at 1% FPR", ylim=(0, 1), title="TPR@1%FPR")
    if rows["tpr@0.01fpr"].isna().all():
        ax_tpr.text(
            0.5,
            0.5,
            "not measurable:\nfewer than 100 test non-members",
            ha="center",
            va="center",
            transform=ax_tpr.transAxes,
        )
    ax_auc.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_report(scores: pd.DataFrame, table: pd.DataFrame, out: Path) -> None:
    """Plots per target folder and TensorBoard scalars/figures/PR curves under out/tensorboard."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"))
    for target, t in table.groupby("target", sort=False):
        fig = sweep_figure(t, f"timestep sweep on {target}")
        if fig is not None:
            fig.savefig(out / f"sweep_{target}.png", dpi=120)
    for (target, epoch), g in scores.groupby(["target", "epoch"], sort=False, dropna=False):
        step = int(epoch) if pd.notna(epoch) else 0
        fig = roc_figure(g, f"{target} (test split)")
        fig.savefig(out / f"roc_{target}.png", dpi=120)
        writer.add_figure("roc", fig, global_step=step)
        for attack, ga in g.groupby("attack", sort=False):
            fig = histogram_figure(ga, f"{attack} on {target}")
            fig.savefig(out / f"hist_{target}_{attack.replace('/', '-')}.png", dpi=120)
            test = ga[ga.split == "test"]
            ranks = test.score.rank(pct=True).to_numpy()  # PR curve wants [0, 1]: rank-normalise
            writer.add_pr_curve(f"{attack}/pr", (test.role == "member").to_numpy(), ranks, global_step=step)
    for _, row in table.iterrows():
        step = int(row.epoch) if pd.notna(row.epoch) else 0
        for k in (
            "auc",
            "tpr@0.01fpr",
            "tpr@0.001fpr",
            "best_acc",
            "two_stage@0.01_test_tpr",
            "two_stage@0.01_test_fpr",
        ):
            if pd.notna(row[k]):
                writer.add_scalar(f"{row.attack}/{k}", row[k], global_step=step)
    writer.close()
