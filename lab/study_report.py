"""The study's report: per-seed metrics -> a table with across-seed spreads, plots with bands, a
power section, and one self-contained `index.html`. Reads the arms' tables only.

    table_seeds.csv         arm x seed x attack x epoch: every metric of `lab.attack`'s metrics table
    table.csv, table.md     arm x attack x epoch: the mean over seeds; the within-run 95% bootstrap
                            interval (averaged over seeds); the across-seed sd, min and max
    auc_vs_epochs.png, tpr_vs_epochs.png   mean over seeds, band = across-seed range (one seed: bootstrap)
    roc_<arm>.png           ROC at the first and last export (first seed)
    power.png               AUC interval width vs number of test examples (subsampled), next to the seed spread
    index.html              all of it, images embedded, with settings, seeds, split fingerprints and costs
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lab import metrics
from lab.data.split import write_atomic
from lab.report import roc_figure, write_csv_atomic

KEYS = ["arm", "attack", "epoch"]
TABLE_COLUMNS = {
    "arm": "arm",
    "attack": "attack",
    "epoch": "epoch",
    "seeds": "seeds",
    "auc": "AUC",
    "auc_lo": "AUC boot lo",
    "auc_hi": "AUC boot hi",
    "auc_seed_sd": "AUC seed sd",
    "auc_seed_min": "AUC seed min",
    "auc_seed_max": "AUC seed max",
    "tpr@0.01fpr": "TPR@1%FPR",
    "tpr@0.01fpr_lo": "TPR boot lo",
    "tpr@0.01fpr_hi": "TPR boot hi",
    "tpr@0.01fpr_seed_sd": "TPR seed sd",
    "tpr@0.01fpr_seed_min": "TPR seed min",
    "tpr@0.01fpr_seed_max": "TPR seed max",
    "two_stage@0.01_test_tpr": "2-stage test TPR@1%",
    "two_stage@0.01_test_fpr": "2-stage test FPR",
    "two_stage@0.01_test_fpr_seed_min": "2-stage FPR min",
    "two_stage@0.01_test_fpr_seed_max": "2-stage FPR max",
    "n_members": "test members",
    "n_nonmembers": "test non-members",
    "calls_per_example": "calls/example",
    "seconds": "attack s",
}


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """arm x attack x epoch: means over seeds, with the across-seed spread of AUC, TPR and two-stage FPR."""
    g = per_seed.groupby(KEYS, sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        **{
            c: (c, "mean")
            for c in (
                "auc",
                "auc_lo",
                "auc_hi",
                "tpr@0.01fpr",
                "tpr@0.01fpr_lo",
                "tpr@0.01fpr_hi",
                "two_stage@0.01_test_tpr",
                "two_stage@0.01_test_fpr",
                "calls_per_example",
                "seconds",
            )
        },
    )
    for col in ("auc", "tpr@0.01fpr", "two_stage@0.01_test_fpr"):
        out[f"{col}_seed_sd"] = g[col].std()
        out[f"{col}_seed_min"], out[f"{col}_seed_max"] = g[col].min(), g[col].max()
    out["n_members"], out["n_nonmembers"] = g.n_members.min(), g.n_nonmembers.min()
    return out.reset_index()[list(TABLE_COLUMNS)]


def markdown_table(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    return (
        "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)])
        + "\n"
    )


def power_rows(table: pd.DataFrame) -> list[dict]:
    """For each TPR@x%FPR: the test non-members it needs (1/x) and what each arm's split had."""
    rows = []
    for f in metrics.FPRS:
        need = math.ceil(1 / f - 1e-9)
        for arm, t in table.groupby("arm", sort=False):
            have = int(t.n_nonmembers.min())
            rows.append(
                {
                    "metric": f"TPR@{f:.1%}FPR".replace(".0%", "%"),
                    "needs test non-members": need,
                    "arm": arm,
                    "has": have,
                    "measurable": "yes" if have >= need else "no (NaN in the table)",
                }
            )
    return rows


def epochs_figure(table: pd.DataFrame, metric: str, chance: float) -> Figure:
    arms = list(dict.fromkeys(table.arm))
    colors = {
        a: f"C{i % 10}" for i, a in enumerate(sorted(table.attack.unique()))
    }  # one colour per attack in every panel
    fig = Figure(figsize=(5 * len(arms), 4))
    axes = fig.subplots(1, len(arms), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms):
        t = table[table.arm == arm]
        seeds = int(t.seeds.max())
        for attack, g in t.groupby("attack", sort=False):
            ax.plot(g.epoch, g[metric], marker="o", color=colors[attack], label=attack)
            lo, hi = (
                (g[f"{metric}_seed_min"], g[f"{metric}_seed_max"])
                if seeds > 1
                else (g[f"{metric}_lo"], g[f"{metric}_hi"])
            )
            ax.fill_between(g.epoch, lo, hi, color=colors[attack], alpha=0.15, lw=0)
        ax.axhline(chance, color="k", ls="--", lw=0.8)
        epochs = sorted(t.epoch.dropna().unique())
        band = f"mean of {seeds} seeds, band: their range" if seeds > 1 else "band: 95% bootstrap"
        ax.set(
            xscale="log",
            xlim=(min(epochs) / 1.5, max(epochs) * 1.5),
            ylim=(-0.02, 1.02),
            xlabel="epochs (log scale)",
            ylabel=f"test {TABLE_COLUMNS[metric]}",
            title=f"{arm} ({band})",
        )
        ax.set_xticks(epochs, [str(int(e)) for e in epochs])
        ax.minorticks_off()
        if t[metric].isna().all():
            ax.text(
                0.5, 0.5, "not measurable:\ntoo few test non-members", ha="center", va="center", transform=ax.transAxes
            )
        else:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def power_figure(scores: dict, table: pd.DataFrame, repeats: int = 10, bootstrap: int = 200) -> tuple[Figure, dict]:
    """AUC 95% bootstrap-interval width vs test examples, subsampling the first arm's scores (each seed)
    of the attack and export whose mean AUC is nearest 0.75 (away from the ceiling, where intervals
    collapse), next to the AUC range across seeds at full size."""
    arm = table.arm.iloc[0]
    t = table[(table.arm == arm) & (table.attack != "blind")]  # the baseline never sees the model
    t = t if len(t) else table[table.arm == arm]
    row = t.iloc[int(np.argmin(np.abs(t.auc.to_numpy() - 0.75)))]
    best, epoch = row.attack, row.epoch
    rng = np.random.default_rng(0)
    widths: dict[int, list[float]] = {}
    for (a, seed), s in scores.items():
        if a != arm:
            continue
        t = s[(s.attack == best) & (s.epoch == epoch) & (s.split == "test")]
        pos, neg = np.flatnonzero(t.role == "member"), np.flatnonzero(t.role != "member")
        for frac in (0.25, 0.5, 0.75, 1.0):
            for _ in range(repeats if frac < 1 else 1):
                idx = np.r_[
                    rng.choice(pos, max(2, round(frac * len(pos))), replace=False),
                    rng.choice(neg, max(2, round(frac * len(neg))), replace=False),
                ]
                lo, hi = metrics.bootstrap_ci(
                    t.score.to_numpy()[idx], (t.role == "member").to_numpy()[idx], metrics.auc, bootstrap
                )
                widths.setdefault(len(idx), []).append(hi - lo)
    n = np.array(sorted(widths))
    w = np.array([np.mean(widths[k]) for k in n])
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    ax.plot(n, w, marker="o", label="95% bootstrap interval width (mean)")
    ax.plot(n, w[-1] * np.sqrt(n[-1] / n), "k:", lw=0.8, label="1/sqrt(n) from the full split")
    if row.seeds > 1:
        ax.axhline(
            row.auc_seed_max - row.auc_seed_min,
            color="C3",
            ls="--",
            label=f"AUC range over {int(row.seeds)} training seeds",
        )
    ax.set(
        xlabel="test examples (members + non-members)",
        ylabel="AUC interval width",
        ylim=(0, None),
        title=f"{arm}: {best} at epoch {int(row.epoch)}",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, {
        "arm": arm,
        "attack": best,
        "epoch": int(row.epoch),
        "examples": n.tolist(),
        "width": w.round(4).tolist(),
    }


def write(per_seed: pd.DataFrame, scores: dict, out: Path, settings: dict, runs: list[dict]) -> pd.DataFrame:
    """Every report file into `out`; the aggregated table."""
    out.mkdir(parents=True, exist_ok=True)
    per_seed = per_seed.sort_values(["arm", "seed", "attack", "epoch"], kind="stable")
    write_csv_atomic(per_seed, out / "table_seeds.csv")
    table = aggregate(per_seed).sort_values(KEYS, kind="stable")
    write_csv_atomic(table, out / "table.csv")
    power = power_rows(table)
    write_atomic(
        out / "table.md",
        (markdown_table(table.rename(columns=TABLE_COLUMNS)) + "\n" + markdown_table(pd.DataFrame(power))).encode(),
    )
    figures = {}
    for metric, name, chance in (("auc", "auc_vs_epochs", 0.5), ("tpr@0.01fpr", "tpr_vs_epochs", 0.01)):
        figures[name] = epochs_figure(table, metric, chance)
    first_seed = {}
    for (arm, seed), s in scores.items():
        first_seed.setdefault(arm, (seed, s))
    for arm, (seed, s) in first_seed.items():
        fig = Figure(figsize=(9, 4.5))
        axes = fig.subplots(1, 2)
        for ax, epoch in zip(axes, (s.epoch.min(), s.epoch.max())):
            roc_figure(s[s.epoch == epoch], f"{arm} (seed {seed}): epoch {epoch}", ax=ax)
        fig.tight_layout()
        figures[f"roc_{arm}"] = fig
    figures["power"], power_curve = power_figure(scores, table)
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)  # rendered once: the file and the page's embedded copy
        write_atomic(out / f"{name}.png", buf.getvalue())
        images[name] = base64.b64encode(buf.getvalue()).decode()
    write_atomic(out / "index.html", page(table, per_seed, power, power_curve, images, settings, runs).encode())
    return table


STYLE = (  # the page's CSS, in its <style> element
    "body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}\n"
    "table.t{border-collapse:collapse;font-size:12px}"
    "table.t td,table.t th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}\n"
    "figure{display:inline-block;margin:.5em}img{max-width:100%}"
    "pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}"
)


def page(table, per_seed, power, power_curve, images, settings, runs) -> str:
    from lab import __version__

    def frame(df: pd.DataFrame) -> str:
        return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0, classes="t")

    def img(name: str, caption: str) -> str:
        return (
            f'<figure><img alt="{name}" src="data:image/png;base64,{images[name]}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    costs = (
        per_seed.groupby("attack", sort=False)
        .agg(
            calls_per_example=("calls_per_example", "mean"),
            setup_calls=("setup_calls", "mean"),
            seconds_per_export=("seconds", "mean"),
            total_seconds=("seconds", "sum"),
        )
        .reset_index()
    )
    rocs = "".join(img(n, f"ROC, first and last export: {n[4:]}") for n in images if n.startswith("roc_"))
    seeds = settings.get("seeds")
    draw = (
        "a new member/non-member draw and training seed per run"
        if settings.get("vary_split", True)
        else "the same draw, a new training seed per run"
    )
    auc_caption = "test AUC: mean over seeds; band: the range over seeds (with one seed: the 95% bootstrap interval)"
    power_caption = (
        "how the AUC interval narrows with more test examples (subsamples of the lab's own scores), "
        "against the spread across seeds"
    )
    seed_columns = [
        "arm",
        "seed",
        "attack",
        "epoch",
        "auc",
        "auc_lo",
        "auc_hi",
        "tpr@0.01fpr",
        "two_stage@0.01_test_tpr",
        "two_stage@0.01_test_fpr",
        "split_fingerprint",
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lab study: {html.escape(str(settings.get("out", "")))}</title>
<style>{STYLE}</style></head>
<body>
<h1>Over-training study</h1>
<p>lab {html.escape(__version__)} &middot; written {datetime.datetime.now().isoformat(timespec="seconds")} &middot;
seeds {html.escape(str(seeds))} ({draw})</p>
<h2>AUC and TPR@1%FPR against training epochs</h2>
{img("auc_vs_epochs", auc_caption)}
{img("tpr_vs_epochs", "test TPR at 1% FPR, the same way")}
<h2>Table</h2>
<p>Means over seeds. "boot lo/hi": the within-run 95% bootstrap interval over test examples, averaged over seeds;
"seed sd/min/max": the spread across training runs, which the bootstrap does not see. Two-stage: the threshold picked
on validation at FPR &le; 1%, applied to test; its min/max show the test FPR a 1% threshold really gets.</p>
{frame(table.rename(columns=TABLE_COLUMNS))}
<h2>Power</h2>
<p>A TPR at x% FPR needs at least 1/x test non-members; where the split has fewer, the table says NaN.</p>
{frame(pd.DataFrame(power))}
{img("power", power_caption)}
<pre>{html.escape(json.dumps(power_curve))}</pre>
<h2>ROC curves</h2>
{rocs}
<h2>Runs: split fingerprints and wall time</h2>
{frame(pd.DataFrame(runs))}
<h2>Cost per attack</h2>
<p>Denoiser calls per example, one-off calls per target, and wall seconds per (export, run).</p>
{frame(costs)}
<h2>Per seed</h2>
{frame(per_seed[seed_columns])}
<h2>Settings</h2>
<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>
</body></html>
"""
