"""`python -m lab.infer`: dataset inference. Was a data owner's collection used to train a target?

    python -m lab.infer --target ~/models/ddpm --owner my_images/ --heldout public_images/ \\
        --attacks '[loss, pia, sima]'
    python -m lab.infer --target runs/x/epoch_0300 --simulate nonmembers --owner_size 48 --repeats 100

With `--owner DIR --heldout DIR`: every image of the owner's folder (used or not: unknown) and of a
held-out folder known to be outside training (same distribution) is scored by each attack; the CDI
test (`lab.dataset_inference`) prints a one-sided p-value, "used" or "not shown" at `--alpha`, and
the smallest number of owner examples that gives p < alpha. With `--simulate members|nonmembers`
on a target with its own split: `--repeats` owner sets drawn from its members (power) or its
non-members (the false-positive rate, which a valid test keeps at alpha), each against
`--heldout_size` other non-members. Writes `<out>/inference.json` and `<out>/features.csv`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Union

from jsonargparse import ActionConfigFile, ArgumentParser

from lab.errors import LabError, ShortErrors, check_number, exit_on_lab_error, sigterm_is_an_error
from lab.paths import resolve_config_args

DEFAULT_ATTACKS = ["loss", "pia", "sima"]


def run(
    target: str,
    attacks: dict | list = tuple(DEFAULT_ATTACKS),
    owner: str | None = None,
    heldout: str | None = None,
    simulate: str | None = None,
    owner_size: int | None = None,
    heldout_size: int | None = None,
    repeats: int = 100,
    alpha: float = 0.05,
    out: str | None = None,
    batch_size: int = 64,
    trainer: dict | None = None,
    seed: int = 0,
) -> dict:
    """Score, test, write `<out>/inference.json` and `<out>/features.csv`; the result as a dict."""
    import pandas as pd  # torch, Lightning and the attacks load here, not at import: `--help` comes at once

    from lab import dataset_inference as di
    from lab.attacks import make_attacks
    from lab.data import split_from_folders
    from lab.data.split import write_json_atomic
    from lab.locks import folder_lock
    from lab.report import write_csv_atomic
    from lab.scoring import check_trainer_kwargs
    from lab.targets.load import load_pipeline, load_target, target_folders

    check_number("--alpha", alpha, above=0.0, below=1.0)
    check_number("--repeats", repeats, minimum=1, integer=True)
    check_number("--batch_size", batch_size, minimum=1, integer=True)
    check_trainer_kwargs(trainer or {})
    built = make_attacks(list(attacks) if not isinstance(attacks, dict) else attacks)
    di.check_attacks(built)
    folders = target_folders(target)
    if len(folders) != 1:
        raise LabError(f"--target must be one pipeline folder, not a run folder of {len(folders)}")
    by_folders = bool(owner or heldout)
    if simulate not in (None, "members", "nonmembers"):
        raise LabError(f"--simulate takes members or nonmembers, got {simulate!r}")
    if by_folders == bool(simulate):
        raise LabError(
            "give either --owner DIR --heldout DIR (a real question) or --simulate members|nonmembers (a check)"
        )
    if by_folders and not (owner and heldout):
        raise LabError("give both --owner DIR and --heldout DIR")
    out_dir = Path(out) if out else folders[0] / "inference"
    loaded = None if by_folders else load_target(folders[0])  # checked before anything is written
    if simulate:
        n_members = loaded.split.roles.count("member")
        owner_size, heldout_size = di.simulation_sizes(
            n_members, len(loaded.split.roles) - n_members, simulate, owner_size, heldout_size
        )
    with folder_lock(out_dir, "lab.infer"):
        if by_folders:
            channels, size, _ = load_pipeline(folders[0]).image_shape
            split = split_from_folders(owner, heldout, image_size=size, channels=channels, seed=seed).split
            for name, n in (("--owner", split.roles.count("member")), ("--heldout", split.roles.count("nonmember"))):
                if n < 2 * di.MIN_TEST:
                    raise LabError(
                        f"{name} needs at least {2 * di.MIN_TEST} images (half are held back for the test), got {n}"
                    )
            split.save(out_dir / "owner_split.json")  # role "member" = the owner's folder, "nonmember" = held out
            loaded = load_target(folders[0], out_dir / "owner_split.json")
        ids, is_owner, features = di.score_features(loaded, built, batch_size, trainer)
        frame = pd.DataFrame(features, columns=list(built))
        frame.insert(0, "id", ids)
        frame.insert(
            1,
            "set",
            ["owner" if m else "heldout" for m in is_owner]
            if by_folders
            else ["member" if m else "nonmember" for m in is_owner],
        )
        result = {
            "target": str(folders[0]),
            "attacks": list(built),
            "alpha": alpha,
            "seed": seed,
            "split_fingerprint": loaded.split.fingerprint(),
        }
        if by_folders:
            test = di.cdi_test(features[is_owner], features[~is_owner], seed)
            needed = di.examples_needed(features[is_owner], features[~is_owner], alpha, seed=seed)
            result.update(
                mode="owner",
                owner=int(is_owner.sum()),
                heldout=int((~is_owner).sum()),
                p_value=test.p_value,
                t_statistic=test.t_statistic,
                verdict="used" if test.p_value < alpha else "not shown",
                owner_examples_needed=needed,
            )
        else:
            sim = di.simulate(features, is_owner, simulate, owner_size, heldout_size, repeats, alpha, seed)
            lo, hi = sim.interval()
            result.update(
                mode="simulate",
                owner_from=simulate,
                owner_size=owner_size,
                heldout_size=heldout_size,
                repeats=repeats,
                rejection_rate=sim.rate,
                rejection_rate_ci=[lo, hi],
                valid_fpr_at_most=sim.margin(),
                median_p_value=float(pd.Series(sim.p_values).median()),
                p_values=sim.p_values,
            )
        write_csv_atomic(frame, out_dir / "features.csv")
        write_json_atomic(out_dir / "inference.json", result)
    result["out"] = str(out_dir)
    return result


def format_result(r: dict) -> str:
    if r["mode"] == "owner":
        needed = r["owner_examples_needed"]
        return (
            f"{r['owner']} owner examples vs {r['heldout']} held-out, attacks {', '.join(r['attacks'])}: "
            f"p = {r['p_value']:.3g} -> {r['verdict'].upper()} at alpha = {r['alpha']}\n"
            + (
                f"owner examples needed for p < {r['alpha']} (median of 20 subsets): {needed}"
                if needed
                else f"even all {r['owner']} owner examples do not give p < {r['alpha']} in the median subset"
            )
        )
    lo, hi = r["rejection_rate_ci"]
    what = (
        "power (owner sets from members)"
        if r["owner_from"] == "members"
        else "false-positive rate (owner sets from non-members)"
    )
    line = (
        f"{what}: {r['rejection_rate']:.3f} [{lo:.3f}, {hi:.3f}] of {r['repeats']} owner sets of {r['owner_size']} "
        f"(vs {r['heldout_size']} held-out) had p < {r['alpha']}; median p = {r['median_p_value']:.3g}"
    )
    if r["owner_from"] == "nonmembers":
        ok = r["rejection_rate"] <= r["valid_fpr_at_most"]
        line += (
            f"\nvalid test: {'yes' if ok else 'NO'} (at most alpha + binomial margin = {r['valid_fpr_at_most']:.3f})"
        )
    return line


class InferParser(ShortErrors, ArgumentParser):
    short_prog = "lab.infer"


def build_parser() -> ArgumentParser:
    p = InferParser(
        prog="python -m lab.infer", description="Dataset inference: was an owner's collection used to train a target?"
    )
    p.add_argument("--config", action=ActionConfigFile, help="YAML with any of the options below")
    p.add_argument("--target", type=str, required=True, help="one pipeline folder")
    p.add_argument(
        "--owner", type=Optional[str], default=None, help="folder of the owner's images (used or not: the question)"
    )
    p.add_argument(
        "--heldout",
        type=Optional[str],
        default=None,
        help="folder of images known to be outside training, same distribution",
    )
    p.add_argument(
        "--simulate",
        type=Optional[str],
        default=None,
        help="check the test on the target's own split: owner sets drawn from its members or non-members",
    )
    p.add_argument("--owner_size", type=Optional[int], default=None, help="--simulate: owner examples per set")
    p.add_argument("--heldout_size", type=Optional[int], default=None, help="--simulate: held-out non-members per set")
    p.add_argument("--repeats", type=int, default=100, help="--simulate: owner sets drawn")
    p.add_argument(
        "--attacks",
        type=Union[dict[str, Optional[dict]], list[str]],
        default=DEFAULT_ATTACKS,
        help="the attacks whose scores are the features (no learned attacks)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level")
    p.add_argument("--out", type=Optional[str], default=None, help="output folder (default: <target>/inference)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--trainer", type=dict, default={}, help="Trainer arguments, e.g. {accelerator: gpu, devices: 1}")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: list[str] | None = None) -> None:
    cfg = build_parser().parse_args(resolve_config_args(sys.argv[1:] if args is None else list(args)))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with exit_on_lab_error("lab.infer"), sigterm_is_an_error("nothing was written; rerun the same command"):
        result = run(
            cfg.target,
            cfg.attacks,
            cfg.owner,
            cfg.heldout,
            cfg.simulate,
            cfg.owner_size,
            cfg.heldout_size,
            cfg.repeats,
            cfg.alpha,
            cfg.out,
            cfg.batch_size,
            cfg.trainer,
            cfg.seed,
        )
    print(format_result(result))
    print(f"\nfeatures and result: {result['out']}/")


if __name__ == "__main__":
    main()
