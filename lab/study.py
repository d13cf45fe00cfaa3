"""`python -m lab.study`: the over-training study in one command.

    python -m lab.study --config configs/study/mnist.yaml

For each arm (e.g. no shift, and non-members from another source) and each seed (`seeds`: a new
member/non-member draw and training seed per run; `vary_split: false` keeps the draw): train a
target with `lab.fit` on the arm's fit config, exporting it along a schedule of epochs (and
logging live MIA AUC to TensorBoard), attack every export with every configured attack through
`lab.attack`, then write one report folder (`lab.study_report`):

    <out>/report/index.html            everything below on one self-contained page
    <out>/report/table.csv, table.md   arm x attack x epoch: mean over seeds, bootstrap interval, seed spread
    <out>/report/table_seeds.csv       the same per seed (two-stage TPR/FPR per run)
    <out>/report/*.png                 AUC / TPR vs epochs with seed bands, ROC, power
    <out>/<arm>/seed_<s>/              the targets, split.json, attacks/ (scores.csv, ...), TensorBoard logs

Each step reads what the one before wrote (split -> fit -> targets -> scores -> report).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from jsonargparse import ActionConfigFile, ArgumentParser

from lab.errors import LabError, ShortErrors, exit_on_lab_error, sigterm_is_an_error
from lab.paths import DEFAULT_STUDY, resolve_config, resolve_config_args

if TYPE_CHECKING:
    import pandas as pd


def fit_arm(fit_config: str, root: Path, overrides: dict) -> None:
    """Fit an arm's target; a rerun after a kill resumes from the arm's last.ckpt (a finished fit
    then only reloads it: its exports are already there)."""
    from lab import fit as lab_fit

    args = ["--config", fit_config, "--trainer.default_root_dir", str(root)]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    if (root / lab_fit.CHECKPOINT_DIR / "last.ckpt").is_file():
        print(
            f"[{root.parent.name}/{root.name}] resuming from {root / lab_fit.CHECKPOINT_DIR / 'last.ckpt'}", flush=True
        )
        args += ["--ckpt_path", "last"]
    lab_fit.main(args)


def seed_overrides(seed: int, vary_split: bool) -> dict:
    """lab.fit overrides of one training run: its training seed, and (by default) its member/non-member draw."""
    return {"seed_everything": seed, **({"data.seed": seed} if vary_split else {})}


def arm_plan(arm: str, spec: dict | None, attacks: dict, fit_config: str) -> tuple[str, dict, dict, list[str]]:
    """An arm's (lab.fit config, overrides, attacks, conditions), or a LabError naming what is wrong with it."""
    spec = spec or {}
    unknown = set(spec) - {"fit_config", "fit", "attacks", "conditions"}
    if unknown:
        raise LabError(
            f"study arm {arm!r}: unknown keys {sorted(unknown)}; "
            "an arm has 'fit_config', 'fit' (lab.fit overrides), 'attacks' "
            "and 'conditions' (text-to-image targets: caption and/or empty)"
        )
    conditions = spec.get("conditions") or ["caption"]
    if not isinstance(conditions, list) or not conditions or any(c not in ("caption", "empty") for c in conditions):
        raise LabError(f"study arm {arm!r}: conditions must be a list of 'caption' and/or 'empty', got {conditions!r}")
    config = resolve_config(spec.get("fit_config") or fit_config)
    if not Path(config).is_file():
        raise LabError(f"study arm {arm!r}: fit config not found: {config}")
    names = spec.get("attacks") or list(attacks)
    missing = [n for n in names if n not in attacks]
    if missing:
        raise LabError(f"study arm {arm!r}: attacks {missing} are not among the study's attacks")
    return config, spec.get("fit") or {}, {n: attacks[n] for n in names}, conditions


def run_study(
    fit_config: str,
    arms: dict,
    attacks: dict | list,
    out: str,
    batch_size: int = 64,
    bootstrap: int = 200,
    seeds: list[int] = (0,),
    vary_split: bool = True,
) -> "pd.DataFrame":
    """Each arm (`{fit_config: its own lab.fit YAML, fit: {lab.fit overrides}, attacks: subset, conditions:
    [caption, empty]}`, all optional) is trained and attacked once per seed, into `<out>/<arm>/seed_<s>/`."""
    import pandas as pd  # torch, Lightning and the attacks load here, not at import: `--help` comes at once

    from lab import attack as lab_attack
    from lab import study_report

    out_dir = Path(out)
    attacks = {n: {} for n in attacks} if isinstance(attacks, list) else attacks
    seeds = check_seeds(seeds)
    plans = {
        arm: arm_plan(arm, spec, attacks, fit_config) for arm, spec in arms.items()
    }  # all checked before any training
    per_seed, scores, runs = [], {}, []
    total, done, started = len(plans) * len(seeds), 0, time.perf_counter()
    for arm, (config, overrides, arm_attacks, conditions) in plans.items():
        for seed in seeds:
            root = out_dir / arm / f"seed_{seed}"
            start = time.perf_counter()
            fit_arm(config, root, {**seed_overrides(seed, vary_split), **overrides})  # an arm's own data.seed wins
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            s, t, _ = lab_attack.run(
                str(root),
                arm_attacks,
                out=str(root / "attacks"),
                batch_size=batch_size,
                bootstrap=bootstrap,
                conditions=conditions,
            )
            attack_s = time.perf_counter() - start
            scores[(arm, seed)] = s
            per_seed.append(t.assign(arm=arm, seed=seed))
            runs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "split_fingerprint": t.split_fingerprint.iloc[0],
                    "fit_s": round(fit_s, 1),
                    "attacks_s": round(attack_s, 1),
                    "folder": str(root),
                }
            )
            done += 1
            eta = (time.perf_counter() - started) / done * (total - done)
            print(
                f"[{arm} seed {seed}] fit {fit_s:.0f} s, attacks {attack_s:.0f} s; "
                f"run {done}/{total}, ETA {eta:.0f} s",
                flush=True,
            )
    settings = {
        "fit_config": fit_config,
        "arms": arms,
        "attacks": attacks,
        "seeds": seeds,
        "vary_split": vary_split,
        "out": out,
        "batch_size": batch_size,
        "bootstrap": bootstrap,
        "fit_configs": {c: Path(c).read_text() for c, _, _, _ in plans.values()},
    }
    return study_report.write(pd.concat(per_seed, ignore_index=True), scores, out_dir / "report", settings, runs)


def check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise LabError(f"seeds must be a list of distinct integers, got {seeds!r}")
    return seeds


class StudyParser(ShortErrors, ArgumentParser):
    short_prog = "lab.study"


def build_parser() -> ArgumentParser:
    p = StudyParser(
        prog="python -m lab.study", description="Train targets along an epoch schedule, attack every export, report."
    )
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--fit_config", type=str, required=True, help="lab.fit YAML (its ScheduledExport sets the epochs)")
    p.add_argument(
        "--arms",
        type=dict[str, Optional[dict]],
        default={"no_shift": {}},
        help="arm name -> {fit_config: another lab.fit YAML, fit: lab.fit overrides, attacks: a subset of --attacks}",
    )
    p.add_argument("--attacks", type=Union[dict[str, Optional[dict]], list[str]], default=["loss", "pia", "blind"])
    p.add_argument("--out", type=str, default="reports/study")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--seeds", type=list[int], default=[0], help="one training run per seed and arm")
    p.add_argument(
        "--vary_split",
        type=bool,
        default=True,
        help="each seed also draws new members/non-members (false: the config's draw, only training varies)",
    )
    return p


def main(args: list[str] | None = None):
    """Parse, run, print; the study table (a DataFrame)."""
    args = resolve_config_args(sys.argv[1:] if args is None else list(args))
    if not any(
        a.split("=", 1)[0] in ("--config", "--fit_config") for a in args
    ):  # the default study, also outside a checkout
        args = ["--config", resolve_config(DEFAULT_STUDY), *args]
    cfg = build_parser().parse_args(args)
    from lab import study_report  # after parsing: `--help` and a typo's error do not wait for torch
    from lab.locks import folder_lock

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    resume = "rerun the same command to resume: finished fits, exports and scores are kept"
    with exit_on_lab_error("lab.study"):  # the seeds and every arm checked before the output folder is touched
        check_seeds(cfg.seeds)
        attacks = {n: {} for n in cfg.attacks} if isinstance(cfg.attacks, list) else cfg.attacks
        for arm, spec in cfg.arms.items():
            arm_plan(arm, spec, attacks, cfg.fit_config)
    with exit_on_lab_error("lab.study"), sigterm_is_an_error(resume), folder_lock(cfg.out, "lab.study"):
        table = run_study(
            cfg.fit_config, cfg.arms, cfg.attacks, cfg.out, cfg.batch_size, cfg.bootstrap, cfg.seeds, cfg.vary_split
        )
    shown = [
        "arm",
        "attack",
        "epoch",
        "seeds",
        "auc",
        "auc_lo",
        "auc_hi",
        "auc_seed_min",
        "auc_seed_max",
        "tpr@0.01fpr",
        "two_stage@0.01_test_fpr",
    ]
    print(
        table[shown]
        .rename(columns=study_report.TABLE_COLUMNS)
        .to_string(index=False, float_format=lambda v: f"{v:.3f}")
    )
    print(f"\nreport: {Path(cfg.out) / 'report' / 'index.html'}  TensorBoard: tensorboard --logdir {cfg.out}")
    return table


def cli() -> None:
    """The `lab-study` console script: `main` without its return value (which would be the exit status)."""
    main()


if __name__ == "__main__":
    main()
