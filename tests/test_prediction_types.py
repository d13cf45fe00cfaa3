"""Targets that predict v or x0 (issue "Every diffusers denoiser, part 1"): `lab.fit` trains them with
their own objective, exports a scheduler that says which, fine-tuning keeps the base model's, and
every attack scores them (the conversions themselves: test_formulas_prediction.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import LDM_TINY_CONFIG, TINY_CONFIG, fit_tiny
from helpers import assert_keeps_its_cost, quick_settings
from test_attacks import NEEDS_REFERENCES

from lab.attacks import ATTACK_NAMES, ATTACKS, make_attacks
from lab.scoring import score_target
from lab.targets.load import load_target


@pytest.fixture(scope="module", params=["v_prediction", "sample"])
def fitted(request, tmp_path_factory):
    run, _ = fit_tiny(tmp_path_factory.mktemp(request.param), "--model.prediction_type", request.param)
    return request.param, run


def test_the_fit_trains_and_exports_its_prediction_type(fitted):
    from diffusers import DDPMPipeline

    kind, run = fitted
    config = json.loads((run / "epoch_0002" / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == kind
    pipe = DDPMPipeline.from_pretrained(run / "epoch_0002", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.isfinite(images.images).all()


@pytest.mark.parametrize(
    "name", [n for n in ATTACK_NAMES if n not in NEEDS_REFERENCES and not ATTACKS[n].text_to_image_only]
)
def test_every_attack_scores_a_v_or_x0_target(fitted, name):
    kind, run = fitted
    target = load_target(run / "epoch_0002")
    attack = make_attacks({name: quick_settings(name)})[name]
    table = score_target(target, {name: attack}, batch_size=32)
    assert attack.prediction_type == kind or name == "blind"  # the blind baseline never binds the model
    assert_keeps_its_cost(table, attack, len(target.split.ids), f"{name} on {kind}")


def test_the_training_loss_is_the_models_own_objective():
    """diffusion_loss = mean ||f(x_t, t) - y||^2 with y = e, v or x0, recomputed from the same draws."""
    from lab.targets import PixelDDPM

    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    for kind in ("epsilon", "v_prediction", "sample"):
        model = PixelDDPM(
            image_size=16, channels=1, block_out_channels=(8, 16), norm_num_groups=4, prediction_type=kind
        )
        torch.manual_seed(3)
        got = model.diffusion_loss(x0)
        torch.manual_seed(3)
        e = torch.randn_like(x0)
        t = torch.randint(0, 1000, (4,))
        a = model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * e
        y = {"epsilon": e, "v_prediction": a.sqrt() * e - (1 - a).sqrt() * x0, "sample": x0}[kind]
        with torch.no_grad():
            expected = (model.unet(x_t, t).sample - y).pow(2).mean()
        torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)


def test_fine_tuning_keeps_the_base_models_prediction_type_and_refuses_another(fitted, tmp_path, capsys):
    from lab.fit import main

    kind, run = fitted
    (tmp_path / "keep").mkdir()
    tuned, _ = fit_tiny(tmp_path / "keep", "--model.pretrained", str(run / "epoch_0002"), "--trainer.max_epochs", "1")
    config = json.loads((tuned / "epoch_0001" / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == kind
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                str(TINY_CONFIG),
                "--model.pretrained",
                str(run / "epoch_0002"),
                "--model.prediction_type",
                "epsilon",
                "--trainer.default_root_dir",
                str(tmp_path / "other"),
            ]
        )
    assert f"model.prediction_type 'epsilon' differs from the pretrained {run / 'epoch_0002'}'s '{kind}'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "other").exists()


def test_an_unknown_prediction_type_is_one_line(tmp_path, capsys):
    from lab.fit import main

    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                str(TINY_CONFIG),
                "--model.prediction_type",
                "flow",
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lab.fit: error: model.prediction_type must be one of epsilon, v_prediction, sample")
    assert not (tmp_path / "run").exists()


def test_a_latent_v_target(tmp_path):
    run, _ = fit_tiny(tmp_path, "--model.prediction_type", "v_prediction", config=LDM_TINY_CONFIG)
    target = load_target(run / "epoch_0002")
    assert target.scheduler.config.prediction_type == "v_prediction"
    table = score_target(target, make_attacks({"loss": {"num_noise": 1}, "pia": {}}))
    assert np.isfinite(table.score).all()
