"""`python -m lab.attack`: run membership-inference attacks on targets and report.

    python -m lab.attack --config configs/attack/core.yaml --target checkpoints/ddpm_mnist/epoch_0100
    python -m lab.attack --target checkpoints/ddpm_mnist --attacks '[loss, pia]'   # every exported epoch
    python -m lab.attack --target ~/models/ddpm-cifar10-32 --members train_imgs/ --nonmembers test_imgs/

`--target` is a diffusers pipeline folder of a family the lab has an adapter for (`lab.targets.families`:
DDPM/DDIM, LDM, Stable Diffusion 1.x/2.x, SDXL; the lab's exports or a pretrained model on local disk),
or a run folder holding several. Ground
truth comes from the split file beside each target, `--split FILE`, or `--members DIR
--nonmembers DIR` (every image in each folder; the split is written to `<out>/split.json`).
Writes into `--out` (default: `<target>/attacks/`): `scores.csv` (one row per attack and
example), `metrics.csv`, ROC and histogram plots, and TensorBoard logs; prints a summary.
Tables are written atomically.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Union

from jsonargparse import ActionConfigFile, ArgumentParser

from lab.attacks import ATTACK_NAMES
from lab.errors import LabError, ShortErrors, check_number, exit_on_lab_error, sigterm_is_an_error
from lab.paths import resolve_config_args

# torch, Lightning and the attacks load on first use, not at import: `--help` and a typo's error line come at once
_LAZY = {
    "PARTIAL_DIR": "lab.scoring",
    "check_trainer_kwargs": "lab.scoring",
    "predict": "lab.scoring",
    "score_target": "lab.scoring",
    "target_state": "lab.scoring",
    "make_attacks": "lab.attacks",
    "ATTACKS": "lab.attacks",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lab.attack' has no attribute {name!r}")


def folder_split(
    target: Path, members: str | None, nonmembers: str | None, out_dir: Path, seed: int, captions: str | None = None
) -> Path:
    """Write the split of `--members DIR --nonmembers DIR` for the target's image shape; its path."""
    from lab.data import split_from_folders
    from lab.targets.load import load_pipeline

    if not (members and nonmembers):
        raise LabError("give both --members DIR and --nonmembers DIR")
    loaded = load_pipeline(target)
    channels, size, _ = loaded.image_shape
    if loaded.conditional and not captions:
        raise LabError(
            f"{target} is a text-to-image target: give --captions COLUMN "
            "(the caption column of each folder's metadata.jsonl)"
        )
    split = split_from_folders(
        members, nonmembers, image_size=size, channels=channels, seed=seed, captions=captions
    ).split
    split.save(out_dir / "split.json")
    return out_dir / "split.json"


def run(
    target: str,
    attacks: dict | list,
    split: str | None = None,
    out: str | None = None,
    batch_size: int = 64,
    bootstrap: int = 200,
    trainer: dict | None = None,
    members: str | None = None,
    nonmembers: str | None = None,
    split_seed: int = 0,
    sweep: list[int] | None = None,
    conditions: list[str] | None = None,
    captions: str | None = None,
    compile: bool = False,
) -> tuple:
    """(scores, metrics, out folder): attack every target under `target`; write scores, metrics,
    plots, TensorBoard into `out`.

    `sweep`: timesteps at which each single-timestep attack (loss, pia, pian, sima) runs,
    one label each (`pia/t100`); the report then plots AUC and TPR@1%FPR against t.
    `conditions` (text-to-image targets): 'caption' and/or 'empty' (the empty prompt; `<attack>@empty`).
    `captions`: the caption column of the --members/--nonmembers folders' metadata.
    `compile`: call the denoiser through torch.compile (attacks without gradients)."""
    import pandas as pd

    from lab.attacks import make_attacks, sweep_timesteps
    from lab.console import Progress
    from lab.locks import folder_lock
    from lab.report import metrics_table, write_csv_atomic, write_report
    from lab.scoring import PARTIAL_DIR, check_conditions, check_trainer_kwargs, conditioned, score_target
    from lab.targets.load import load_target, read_meta, target_folders

    folders = target_folders(target)
    built = make_attacks(sweep_timesteps(attacks, sweep))
    check_trainer_kwargs(trainer or {})
    conditions = check_conditions(["caption"] if conditions is None else conditions)
    check_number("--batch_size", batch_size, minimum=1, integer=True)
    check_number("--bootstrap", bootstrap, minimum=1, integer=True)
    out_dir = Path(out) if out else Path(target) / "attacks"
    if (members or nonmembers) and split:
        raise LabError("give either --split FILE or --members/--nonmembers DIRS, not both")
    by_folders = bool(members or nonmembers)
    targets = (
        None if by_folders else [load_target(f, split) for f in folders]
    )  # all checked before anything is written
    if by_folders and (bound := [f for f in folders if read_meta(f).get("split_fingerprint") is not None]):
        raise LabError(
            f"{bound[0]} records the split it was trained on (target.json): attack it with its split.json, "
            "not --members/--nonmembers"
        )
    with folder_lock(out_dir, "lab.attack"):  # one writer per output folder, found unusable before any scoring
        if by_folders:
            split = folder_split(folders[0], members, nonmembers, out_dir, split_seed, captions)
            targets = [load_target(f, split) for f in folders]
        for t in targets:
            if not t.split_bound:  # an external pipeline: say which ground truth was used, since nothing binds it
                print(
                    f"lab.attack: {t.path.name} records no split of its own; ground truth: {t.split_path} "
                    f"(fingerprint {t.split.fingerprint()[:16]}, in scores.csv)",
                    flush=True,
                )
        # resume per (target, attack) unless Lightning relaunches this command once per process (strategy ddp)
        relaunched = "ddp" in str((trainer or {}).get("strategy", "")) and "spawn" not in str(
            (trainer or {}).get("strategy", "")
        )
        partial = None if relaunched else out_dir / PARTIAL_DIR
        progress = Progress(
            sum(len(list(conditioned(t, built, conditions))) for t in targets)
        )  # a line per (target, attack) with an ETA for the rest
        per_target = [
            score_target(
                t, built, batch_size, trainer, partial, progress=progress, conditions=conditions, compile=compile
            )
            for t in targets
        ]
        if any(s is None for s in per_target):  # a DDP rank other than 0
            return None, None, out_dir
        scores = pd.concat(per_target, ignore_index=True)
        table = metrics_table(scores, bootstrap=bootstrap)
        write_csv_atomic(scores, out_dir / "scores.csv")
        write_csv_atomic(table, out_dir / "metrics.csv")
        write_report(scores, table, out_dir)
    return scores, table, out_dir


def format_summary(table) -> str:
    cols = {
        "attack": "attack",
        "epoch": "epoch",
        "auc": "AUC",
        "auc_lo": "AUC lo",
        "auc_hi": "AUC hi",
        "tpr@0.01fpr": "TPR@1%",
        "two_stage@0.01_test_tpr": "2-stage TPR@1%",
        "two_stage@0.01_test_fpr": "2-stage FPR",
        "calls_per_example": "calls",
    }
    return table[list(cols)].rename(columns=cols).to_string(index=False, float_format=lambda v: f"{v:.3f}")


class AttackParser(ShortErrors, ArgumentParser):
    short_prog = "lab.attack"


def build_parser() -> ArgumentParser:
    p = AttackParser(prog="python -m lab.attack", description="Run membership-inference attacks on diffusion targets.")
    p.add_argument("--config", action=ActionConfigFile, help="YAML with any of the options below")
    p.add_argument("--target", type=str, required=True, help="pipeline folder, or a run folder of them")
    p.add_argument(
        "--split", type=Optional[str], default=None, help="split file (default: split.json beside the target)"
    )
    p.add_argument(
        "--members",
        type=Optional[str],
        default=None,
        help="folder of member images (with --nonmembers, instead of a split file)",
    )
    p.add_argument("--nonmembers", type=Optional[str], default=None, help="folder of non-member images")
    p.add_argument(
        "--split_seed", type=int, default=0, help="seed halving --members/--nonmembers into validation/test"
    )
    p.add_argument(
        "--attacks",
        type=Union[dict[str, Optional[dict]], list[str]],
        default=["loss", "pia"],
        help=f"attack names, or {{name: settings}}; names: {', '.join(ATTACK_NAMES)}",
    )
    p.add_argument(
        "--sweep_timesteps",
        type=Optional[list[int]],
        default=None,
        help="run loss, pia, pian, sima at each of these timesteps (labels <attack>/t<t>) and plot AUC vs t",
    )
    p.add_argument("--out", type=Optional[str], default=None, help="output folder (default: <target>/attacks)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for confidence intervals")
    p.add_argument("--trainer", type=dict, default={}, help="Trainer arguments, e.g. {accelerator: gpu, devices: 1}")
    p.add_argument(
        "--condition",
        type=list[str],
        default=["caption"],
        help="text-to-image targets: condition each denoiser call on the example's caption and/or the empty prompt "
        "(e.g. --condition '[caption, empty]'; empty-prompt rows are named <attack>@empty)",
    )
    p.add_argument(
        "--compile",
        type=bool,
        default=False,
        help="call the denoiser through torch.compile (attacks without gradients); "
        "scripts/bench_compile.py measures it",
    )
    p.add_argument(
        "--captions",
        type=Optional[str],
        default=None,
        help="caption column of the --members/--nonmembers folders' metadata.jsonl / metadata.csv "
        "(text-to-image targets)",
    )
    return p


def main(args: list[str] | None = None) -> None:
    cfg = build_parser().parse_args(resolve_config_args(sys.argv[1:] if args is None else list(args)))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per attack: keep it quiet
    with (
        exit_on_lab_error("lab.attack"),
        sigterm_is_an_error("rerun the same command: finished (target, attack) scores are kept"),
    ):
        _, table, out = run(
            cfg.target,
            cfg.attacks,
            cfg.split,
            cfg.out,
            cfg.batch_size,
            cfg.bootstrap,
            cfg.trainer,
            cfg.members,
            cfg.nonmembers,
            cfg.split_seed,
            cfg.sweep_timesteps,
            cfg.condition,
            cfg.captions,
            cfg.compile,
        )
    if table is None:  # a DDP rank other than 0: rank 0 reports
        return
    print(format_summary(table))
    print(f"\nscores, metrics and plots: {out}/  TensorBoard: tensorboard --logdir {out}/tensorboard")


if __name__ == "__main__":
    main()
