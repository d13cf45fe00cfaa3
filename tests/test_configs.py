"""Every YAML shipped under lab/configs/ parses with the front end it is for: fit configs through
LightningCLI's `--print_config` (class paths, init_args and their types), study configs through the
study parser with every arm checked (its fit config with the arm's overrides, its attacks), attack
configs through the attack parser with every attack built from its settings."""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml
from conftest import ROOT

CONFIGS = ROOT / "lab" / "configs"
ALL = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))


def kind(name: str) -> str:
    keys = set(yaml.safe_load((CONFIGS / name).read_text()))
    if "fit_config" in keys:
        return "study"
    if "attacks" in keys and "model" not in keys:
        return "attack"
    assert {"model", "data", "trainer"} <= keys, f"{name}: neither a fit, a study nor an attack config"
    return "fit"


def print_config(config: str, *overrides: str) -> dict:
    """`python -m lab.fit --config CONFIG [overrides] --print_config`, in-process; the printed config."""
    from lab.fit import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--config", config, *overrides, "--print_config"])
    assert done.value.code in (0, None), out.getvalue()[-500:]
    return yaml.safe_load(out.getvalue())


def test_every_shipped_config_is_checked_here():
    assert {
        "ddpm_mnist_dp.yaml",
        "text2image_finetune.yaml",
        "study/latent_vs_pixel.yaml",
        "study/ldm_mnist_fit.yaml",
    } <= set(ALL)
    assert {kind(n) for n in ALL} == {"fit", "study", "attack"}


@pytest.mark.parametrize("name", [n for n in ALL if kind(n) == "fit"])
def test_fit_config_prints(name):
    shown = print_config(str(CONFIGS / name))
    assert shown["model"]["class_path"].startswith("lab.targets.") and shown["data"]["members"] >= 1


@pytest.mark.parametrize("name", [n for n in ALL if kind(n) == "study"])
def test_study_config_parses_with_every_arm(name):
    from lab.attacks import make_attacks
    from lab.paths import resolve_config, resolve_config_args
    from lab.study import arm_plan, build_parser, check_seeds, seed_overrides

    cfg = build_parser().parse_args(resolve_config_args(["--config", str(CONFIGS / name)]))
    seeds = check_seeds(cfg.seeds)
    attacks = {n: {} for n in cfg.attacks} if isinstance(cfg.attacks, list) else cfg.attacks
    make_attacks(attacks)
    for arm, spec in cfg.arms.items():
        config, overrides, _, _ = arm_plan(arm, spec, attacks, resolve_config(cfg.fit_config))
        args = [f"--{k}={v}" for k, v in {**overrides, **seed_overrides(seeds[-1], cfg.vary_split)}.items()]
        print_config(config, *args)


@pytest.mark.parametrize("name", [n for n in ALL if kind(n) == "attack"])
def test_attack_config_parses_and_builds_every_attack(name):
    from lab.attack import build_parser
    from lab.attacks import make_attacks

    cfg = build_parser().parse_args(["--config", str(CONFIGS / name), "--target", "unused"])
    attacks = make_attacks(cfg.attacks)
    assert attacks and all(a.cost() is not None for n, a in attacks.items() if n.split("/")[0] not in ("lira", "rmia"))
