"""Formula tests for SimA (Rao, Qu, Moyer, TMLR 2025): independent recomputations of the score
from the documented equation.

SimA queries the denoiser once, on the clean image x0 at timestep t, and scores the p-th power of
its output: score = -mean_pixels |eps(x0, t)|^p (a small predicted noise means a member, so the
lab's score, higher = member, is the negated statistic).

The expected side is plain torch written here, using only the documented interface of
`lab.attacks` (`ATTACKS[name](**settings).bind(target).score(x0, rows)`), never its code. The target
is the fixed, seeded, perturbed tiny UNet of conftest: no training. Each test also checks that the
documented equation differs from a plausible mistake on this fixture.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from helpers import eps, pix_mean

from lab.attacks import ATTACKS
from lab.targets.load import Target

RTOL, ATOL = 1e-4, 1e-7
ROWS = torch.tensor([3, 0, 7, 12, 5])


# ----------------------------------------------------------------------------- fixtures


def make_unet() -> diffusers.UNet2DModel:
    from helpers import random_unet

    return random_unet()


def make_target(unet) -> Target:
    return Target(
        unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000), split=None, split_path=None, path=None
    )


@pytest.fixture(scope="module")
def unet():
    return make_unet()


@pytest.fixture(scope="module")
def target(unet):
    return make_target(unet)


@pytest.fixture(scope="module")
def x0():
    g = torch.Generator().manual_seed(11)
    return torch.rand(len(ROWS), 1, 16, 16, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- the equations


def expected_sima(unet, x0, t: int, p: float = 4.0) -> torch.Tensor:
    return -pix_mean(eps(unet, x0, t).abs() ** p)


def score(target, name, x0, rows=ROWS, **settings) -> torch.Tensor:
    attack = ATTACKS[name](**settings).bind(target)
    with torch.inference_mode():
        got = attack.score(x0, rows)
    got = torch.as_tensor(np.asarray(got.detach().cpu() if torch.is_tensor(got) else got)).float()
    assert got.shape == (len(rows),), f"{name}: expected one score per example, got shape {tuple(got.shape)}"
    return got


def close(got, expected):
    torch.testing.assert_close(got, expected.float(), rtol=RTOL, atol=ATOL)


def differ(a, b):
    return not torch.allclose(a, b, rtol=1e-3, atol=1e-6)


class Counter:
    """Wraps `unet.forward` (so both `unet(...)` and `unet.forward(...)` are seen) and records, per
    call, the batch size and the timesteps it was given."""

    def __init__(self, unet):
        self.calls: list[tuple[int, list[int]]] = []
        inner = unet.forward

        def forward(sample, timestep, *args, **kwargs):
            ts = torch.as_tensor(timestep).flatten().tolist()
            self.calls.append((int(sample.shape[0]), [int(round(float(v))) for v in ts]))
            return inner(sample, timestep, *args, **kwargs)

        unet.forward = forward

    @property
    def examples(self) -> int:
        return sum(b for b, _ in self.calls)

    @property
    def timesteps(self) -> set[int]:
        return {v for _, ts in self.calls for v in ts}


def test_fixture_is_non_trivial(unet, x0):
    e0, e100 = eps(unet, x0, 0), eps(unet, x0, 100)
    assert e0.std() > 1e-3 and differ(e0, e100) and differ(e0, eps(unet, x0 + 0.1, 0))


# ----------------------------------------------------------------------------- SimA


@pytest.mark.parametrize("t", [0, 100, 500])
def test_sima_matches_the_paper(unet, target, x0, t):
    got = score(target, "sima", x0, timestep=t, p=4.0, seed=0)
    close(got, expected_sima(unet, x0, t))


def test_sima_p_matters(unet, target, x0):
    e4, e2 = expected_sima(unet, x0, 100, 4.0), expected_sima(unet, x0, 100, 2.0)
    assert differ(e4, e2)
    got2 = score(target, "sima", x0, timestep=100, p=2.0, seed=0)
    close(got2, e2)
    assert differ(got2, score(target, "sima", x0, timestep=100, p=4.0, seed=0))


def test_sima_timestep_matters(unet, target, x0):
    assert differ(expected_sima(unet, x0, 100), expected_sima(unet, x0, 0))
    assert differ(
        score(target, "sima", x0, timestep=100, p=4.0, seed=0), score(target, "sima", x0, timestep=0, p=4.0, seed=0)
    )


def test_sima_mean_not_sum_and_negated(unet, x0):
    # the documented statistic is a negated pixel mean: not a sum, not the 4-norm, not un-negated
    e = expected_sima(unet, x0, 100)
    raw = eps(unet, x0, 100).abs() ** 4
    assert (e < 0).all()
    assert differ(e, -raw.flatten(1).sum(1)) and differ(e, -(raw.flatten(1).sum(1) ** 0.25)) and differ(e, -e)


def test_sima_queries_the_denoiser_once_per_example_on_the_clean_image(x0):
    unet = make_unet()
    counter = Counter(unet)
    got = score(make_target(unet), "sima", x0, timestep=100, p=4.0, seed=0)
    assert counter.examples == len(ROWS), counter.calls
    assert counter.timesteps == {100}, counter.calls
    del unet.forward  # back to the plain module
    close(got, expected_sima(unet, x0, 100))
