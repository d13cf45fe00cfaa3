"""Formula tests for targets that predict v or the sample x0 instead of the noise (SD 2.x, many DDPM/LDM
checkpoints): every attack's score recomputed in plain torch on a fixed random UNet read as a v- or
x0-predictor.

The expected side converts the model's output with the identities (abar = abar_t, x_t = sqrt(abar) x0 +
sqrt(1 - abar) e):

    v   = sqrt(abar) e - sqrt(1 - abar) x0      =>  e = sqrt(abar) v + sqrt(1 - abar) x_t
    x0  = (x_t - sqrt(1 - abar) e) / sqrt(abar)  =>  e = (x_t - sqrt(abar) x0) / sqrt(1 - abar)

written here, never taken from `lab.attacks`. Attacks that need a noise prediction (PIA/PIAN, SecMI,
SimA, reconstruction, gray-box) are then the papers' equations (`test_formulas.py`'s expected side) on
that converted prediction; the loss family (`objective: model`, the default) uses the model's own
training loss ||v_hat - v||^2 or ||x0_hat - x0||^2, and `objective: eps` the epsilon-space loss.
"""

from __future__ import annotations

from types import SimpleNamespace

import diffusers
import pytest
import torch
from helpers import differ, draws, linear_abar, pix_mean, q, random_unet
from test_formulas import (
    ROWS,
    close,
    expected_loss,
    expected_pfami,
    expected_pia,
    expected_reconstruction,
    expected_secmi,
    graybox_terms,
    score,
)
from test_formulas_sima import expected_sima

from lab.targets.load import Target

KINDS = {"v": "v_prediction", "x0": "sample"}


class EpsHat(torch.nn.Module):
    """The noise prediction of a v- or x0-predicting UNet, by the identities above."""

    def __init__(self, unet, abar, kind: str):
        super().__init__()
        self.unet, self.abar, self.kind = unet, abar, kind

    def forward(self, x, t):
        out = self.unet(x, t).sample
        a = self.abar[t].view(-1, 1, 1, 1)
        e = a.sqrt() * out + (1 - a).sqrt() * x if self.kind == "v" else (x - a.sqrt() * out) / (1 - a).sqrt()
        return SimpleNamespace(sample=e)


@pytest.fixture(scope="module")
def unet():
    return random_unet()


@pytest.fixture(scope="module")
def abar():
    return linear_abar()


@pytest.fixture(scope="module")
def x0():
    g = torch.Generator().manual_seed(7)
    return torch.rand(len(ROWS), 1, 16, 16, generator=g) * 2 - 1


def target_of(unet, kind: str, **scheduler) -> Target:
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=KINDS[kind], **scheduler)
    return Target(unet=unet, scheduler=sched, split=None, split_path=None, path=None)


def test_the_identities_hold(abar, x0):
    e = draws(x0, 0, ROWS)
    for t in (0, 100, 900):
        a = abar[t]
        x_t = q(abar, x0, t, e)
        v = a.sqrt() * e - (1 - a).sqrt() * x0
        torch.testing.assert_close(a.sqrt() * v + (1 - a).sqrt() * x_t, e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close((x_t - a.sqrt() * x0) / (1 - a).sqrt(), e, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_attacks_on_the_noise_prediction_convert_the_output(unet, abar, x0, kind):
    target, hat = target_of(unet, kind), EpsHat(unet, abar, kind)
    checks = {
        "pia": (expected_pia(hat, abar, x0), expected_pia(unet, abar, x0)),
        "pian": (expected_pia(hat, abar, x0, normalise=True), expected_pia(unet, abar, x0, normalise=True)),
        "secmi_stat": (expected_secmi(hat, abar, x0)[0], expected_secmi(unet, abar, x0)[0]),
        "sima": (expected_sima(hat, x0, 100), expected_sima(unet, x0, 100)),
    }
    for name, (expected, as_if_eps) in checks.items():
        close(score(target, name, x0), expected.float())
        assert differ(expected, as_if_eps), f"{name}: reading the {kind} output as eps would not be caught"
    expected = expected_reconstruction(hat, abar, x0, 100, 4, "mse")
    close(score(target, "reconstruction", x0, timestep=100, steps=4, metric="mse"), expected)
    assert differ(expected, expected_reconstruction(unet, abar, x0, 100, 4, "mse"))


@pytest.mark.parametrize("kind", KINDS)
def test_graybox_feeds_the_sampler_the_raw_output(unet, abar, x0, kind):
    """The box is the target's own DDIM sampler, which reads its output by its prediction type."""
    L, _ = graybox_terms(EpsHat(unet, abar, kind), abar, x0, 50, 150)
    close(score(target_of(unet, kind), "graybox", x0, grid_step=50, truncation=150), -L.mean(1))


def expected_model_loss(unet, abar, x0, timesteps, num_noise, kind):
    """-mean over (t, draw) of the mean-pixel training loss ||out - target||^2 of the model's own objective."""
    total = 0
    for t in timesteps:
        for k in range(num_noise):
            e = draws(x0, k, ROWS)
            x_t = q(abar, x0, t, e)
            with torch.no_grad():
                out = unet(x_t, torch.full((len(x0),), t)).sample
            own = abar[t].sqrt() * e - (1 - abar[t]).sqrt() * x0 if kind == "v" else x0
            total = total + pix_mean((out - own) ** 2)
    return -total / (len(timesteps) * num_noise)


@pytest.mark.parametrize("kind", KINDS)
def test_the_loss_family_uses_the_models_own_objective_or_the_eps_loss(unet, abar, x0, kind):
    target, hat = target_of(unet, kind), EpsHat(unet, abar, kind)
    own = expected_model_loss(unet, abar, x0, [10, 300], 2, kind)
    close(score(target, "loss", x0, timesteps=[10, 300], num_noise=2), own)
    in_eps = expected_loss(hat, abar, x0, [10, 300], 2)
    close(score(target, "loss", x0, timesteps=[10, 300], num_noise=2, objective="eps"), in_eps)
    assert differ(own, in_eps) and differ(own, expected_loss(unet, abar, x0, [10, 300], 2))
    # PFAMI's fluctuations in eps space are the paper's equation on the converted prediction
    expected = expected_pfami(hat, abar, x0, [0, 200], [0.9, 0.75], "fresh")
    got = score(target, "pfami", x0, timesteps=[0, 200], strengths=[0.9, 0.75], objective="eps")
    close(got, expected)


def test_an_unknown_objective_or_prediction_type_is_refused(unet):
    from lab.errors import LabError

    with pytest.raises(LabError, match="objective must be one of model, eps"):
        score(target_of(unet, "v"), "loss", torch.zeros(1, 1, 16, 16), objective="v")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    sched.register_to_config(prediction_type="flow")
    target = Target(unet=unet, scheduler=sched, split=None, split_path=None, path=None)
    with pytest.raises(LabError, match="predicts 'flow'; supported: epsilon, v_prediction, sample"):
        score(target, "pia", torch.zeros(1, 1, 16, 16))


def test_an_epsilon_target_is_computed_exactly_as_before(unet, x0):
    """On an epsilon target the output is the noise prediction itself and the loss residual is out - e:
    the same tensors as before prediction types existed, so every score is bit for bit the same."""
    from lab.attacks import ATTACKS

    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    attack = ATTACKS["loss"]().bind(Target(unet=unet, scheduler=sched, split=None, split_path=None, path=None))
    e = draws(x0, 0, ROWS)
    with torch.inference_mode():
        raw = unet(x0, torch.full((len(x0),), 100)).sample
        assert torch.equal(attack.eps(x0, 100), raw)
        assert torch.equal(attack.error(x0, 100, x0, e), raw - e)
        assert torch.equal(attack.error(x0, 100, x0, e), attack.eps(x0, 100) - e)


@pytest.mark.parametrize("family", ["pixel", "latent", "stable_diffusion", "sdxl"])
def test_every_adapter_inverts_the_forward_process_for_each_prediction_type(family):
    """Each adapter's conversions (`eps_from`, `x0_from`, `training_target`) against the identities above,
    on the exact outputs of a perfect predictor: from x0 and e, form x_t, v, and what each kind outputs;
    every conversion must give back e and x0 (and its own training target)."""
    from lab.targets.families import family as adapter

    fam = adapter(family)
    g = torch.Generator().manual_seed(0)
    x0, e = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    a = torch.tensor([0.9, 0.5, 0.1, 0.02]).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * e
    torch.testing.assert_close(fam.q_sample(x0, e, a), x_t)
    v = a.sqrt() * e - (1 - a).sqrt() * x0
    for kind, out in (("epsilon", e), ("v_prediction", v), ("sample", x0)):
        torch.testing.assert_close(fam.eps_from(out, x_t, a, kind), e, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fam.x0_from(out, x_t, a, kind), x0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fam.training_target(x0, e, a, kind), out)
        assert fam.residual(out, x0, e, a, kind).abs().max() < 1e-5
