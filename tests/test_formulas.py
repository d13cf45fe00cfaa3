"""Formula tests: independent recomputations of every attack score from the papers' equations.

The expected side is written here in plain torch (noise schedule, seeded noise, DDIM moves,
losses), using only the documented interface of `lab.attacks` (`ATTACKS[name](**settings)
.bind(target).score(x0, rows)`), never its code. The target is a fixed, seeded, randomly
initialised (and perturbed) tiny UNet: no training. Each test also checks that the documented
equation differs from a plausible mistake on this fixture, so that the comparison has teeth.
"""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import differ, draws, eps, linear_abar, move, noise, pix_mean, q
from torchmetrics.functional.image import structural_similarity_index_measure

from lab.attacks import ATTACKS
from lab.targets.load import Target

RTOL, ATOL = 1e-4, 1e-6
ROWS = torch.tensor([3, 0, 7, 12, 5])


# ----------------------------------------------------------------------------- fixtures


def make_unet() -> diffusers.UNet2DModel:
    from helpers import random_unet

    return random_unet()


@pytest.fixture(scope="module")
def unet():
    return make_unet()


@pytest.fixture(scope="module")
def x0():
    g = torch.Generator().manual_seed(7)
    return torch.rand(len(ROWS), 1, 16, 16, generator=g) * 2 - 1


def make_target(unet, clip_sample: bool | None = None) -> Target:
    kwargs = {} if clip_sample is None else {"clip_sample": clip_sample}
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, **kwargs)
    return Target(unet=unet, scheduler=scheduler, split=None, split_path=None, path=None)


@pytest.fixture(scope="module")
def target(unet):
    return make_target(unet)


@pytest.fixture(scope="module")
def abar():
    return linear_abar()


# ----------------------------------------------------------------------------- the shared equations


def pix_sum(v):
    return v.flatten(1).sum(1)


def score(target, name, x0, rows=ROWS, grad=False, **settings):
    attack = ATTACKS[name](**settings).bind(target)
    if grad:
        return attack.score(x0, rows).detach().float()
    with torch.inference_mode():
        got = attack.score(x0, rows)
    return got.clone().float()


def close(got, expected):
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_fixture_is_non_trivial(unet, x0):
    e1, e2 = eps(unet, x0, 10), eps(unet, x0 * 0.5, 10)
    assert e1.std() > 1e-3 and differ(e1, e2) and differ(e1, eps(unet, x0, 500))


# ----------------------------------------------------------------------------- 1. loss


def expected_loss(unet, abar, x0, timesteps, num_noise, rows=ROWS):
    total = 0
    for t in timesteps:
        for k in range(num_noise):
            e = draws(x0, k, rows)
            total = total + pix_mean((eps(unet, q(abar, x0, t, e), t) - e) ** 2)
    return -total / (len(timesteps) * num_noise)


def test_loss_matches_the_paper(unet, target, abar, x0):
    got = score(target, "loss", x0, timesteps=[10, 300], num_noise=2)
    expected = expected_loss(unet, abar, x0, [10, 300], 2)
    close(got, expected)
    # seeding by batch position instead of split row would give another score
    assert differ(expected, expected_loss(unet, abar, x0, [10, 300], 2, rows=torch.arange(len(ROWS))))


# ----------------------------------------------------------------------------- 2. multistep_loss


def multistep_losses(unet, abar, x0, grid_step, truncation, num_noise=1):
    per_t = []
    for t in range(0, truncation + 1, grid_step):
        L = 0
        for k in range(num_noise):
            e = draws(x0, k, ROWS)
            L = L + pix_mean((eps(unet, q(abar, x0, t, e), t) - e) ** 2)
        per_t.append(L / num_noise)
    return torch.stack(per_t, dim=1)  # (B, |T|)


@pytest.mark.parametrize("statistic", ["mean", "median", "min", "max", "sum"])
def test_multistep_loss_matches_the_paper(unet, target, abar, x0, statistic):
    L = multistep_losses(unet, abar, x0, 50, 150)
    assert L.shape[1] == 4  # t = 0, 50, 100, 150
    stat = {
        "mean": lambda v: v.mean(1),
        "median": lambda v: v.median(1).values,  # lower median
        "min": lambda v: v.min(1).values,
        "max": lambda v: v.max(1).values,
        "sum": lambda v: v.sum(1),
    }[statistic]
    expected = -stat(L)
    got = score(target, "multistep_loss", x0, grid_step=50, truncation=150, statistic=statistic)
    close(got, expected)
    if statistic == "median":  # lower median differs from the mean of the two middle values
        assert differ(expected, -L.sort(1).values[:, 1:3].mean(1))
    if statistic == "mean":  # the grid starts at t = 0, not at grid_step
        assert differ(expected, -L[:, 1:].mean(1))


def test_multistep_loss_matches_the_paper_with_two_draws(unet, target, abar, x0):
    L = multistep_losses(unet, abar, x0, 50, 150, num_noise=2)
    got = score(target, "multistep_loss", x0, grid_step=50, truncation=150, statistic="mean", num_noise=2)
    close(got, -L.mean(1))


# ----------------------------------------------------------------------------- 3. pia / pian


def expected_pia(unet, abar, x0, t=200, p=4, normalise=False):
    e0 = eps(unet, x0, 0)
    if normalise:
        e0 = e0 / pix_mean(e0.abs()).view(-1, 1, 1, 1) * math.sqrt(2 / math.pi)
    xt = q(abar, x0, t, e0)
    return -pix_mean((eps(unet, xt, t) - e0).abs() ** p)


def test_pia_matches_the_paper(unet, target, abar, x0):
    close(score(target, "pia", x0), expected_pia(unet, abar, x0))
    close(score(target, "pia", x0, timestep=100, p=2), expected_pia(unet, abar, x0, t=100, p=2))


def test_pian_matches_the_paper(unet, target, abar, x0):
    expected = expected_pian = expected_pia(unet, abar, x0, normalise=True)
    close(score(target, "pian", x0), expected)
    # pian without its normalisation would be pia, and the two differ on this fixture
    assert differ(expected_pian, expected_pia(unet, abar, x0))
    # normalising only inside the difference (not in x_t) is another mistake that would be caught
    e0 = eps(unet, x0, 0)
    e0n = e0 / pix_mean(e0.abs()).view(-1, 1, 1, 1) * math.sqrt(2 / math.pi)
    half = -pix_mean((eps(unet, q(abar, x0, 200, e0), 200) - e0n).abs() ** 4)
    assert differ(expected_pian, half)


# ----------------------------------------------------------------------------- 4. secmi_stat


def expected_secmi(unet, abar, x0, t_sec=100, k=10, swap_up=False):
    x = x0
    calls = 0
    for s in range(0, t_sec - 2 * k + 1, k):
        x = move(abar, x, s, s + k, eps(unet, x, s))
        calls += 1
    x_tilde = x
    if swap_up:
        x_up = move(abar, x_tilde, t_sec, t_sec - k, eps(unet, x_tilde, t_sec - k))
    else:
        x_up = move(abar, x_tilde, t_sec - k, t_sec, eps(unet, x_tilde, t_sec - k))
    x_rec = move(abar, x_up, t_sec, t_sec - k, eps(unet, x_up, t_sec))
    calls += 2
    return -pix_sum((x_tilde - x_rec) ** 2), calls


def test_secmi_stat_matches_the_paper(unet, target, abar, x0):
    expected, calls = expected_secmi(unet, abar, x0)
    assert calls == 11
    close(score(target, "secmi_stat", x0), expected)
    assert differ(expected, expected_secmi(unet, abar, x0, swap_up=True)[0])
    assert differ(expected, expected / 256)  # a sum over pixels, not a mean


def test_secmi_stat_matches_the_paper_with_other_settings(unet, target, abar, x0):
    expected, calls = expected_secmi(unet, abar, x0, t_sec=60, k=20)
    assert calls == 4
    close(score(target, "secmi_stat", x0, t_sec=60, interval=20), expected)
    assert differ(expected, expected_secmi(unet, abar, x0, t_sec=60, k=20, swap_up=True)[0])


# ----------------------------------------------------------------------------- 5. pfami


def neighbour(x, lam):
    size = x.shape[-1]
    side = max(1, round(size * lam))
    top = (size - side) // 2
    crop = x[..., top : top + side, top : top + side]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def expected_pfami(unet, abar, x0, timesteps, strengths, noise_mode):
    copies = [x0] + [neighbour(x0, lam) for lam in strengths]
    Fs = []
    for j, t in enumerate(timesteps):
        L = []
        for c, copy in enumerate(copies):
            d = j * (1 + len(strengths)) + c if noise_mode == "fresh" else j
            e = draws(x0, d, ROWS)
            L.append(pix_mean((eps(unet, q(abar, copy, t, e), t) - e) ** 2))
        for c in range(1, len(copies)):
            Fs.append((L[c] - L[0]) / L[0])
    return torch.stack(Fs, 1).mean(1)


@pytest.mark.parametrize("noise_mode", ["fresh", "shared"])
def test_pfami_matches_the_paper(unet, target, abar, x0, noise_mode):
    expected = expected_pfami(unet, abar, x0, [0, 200], [0.9, 0.75], noise_mode)
    got = score(target, "pfami", x0, timesteps=[0, 200], strengths=[0.9, 0.75], noise=noise_mode)
    close(got, expected)
    other = "shared" if noise_mode == "fresh" else "fresh"
    assert differ(expected, expected_pfami(unet, abar, x0, [0, 200], [0.9, 0.75], other))


def test_pfami_matches_the_paper_with_default_strengths(unet, target, abar, x0):
    lam = float(np.linspace(0.95, 0.70, 10)[5])
    assert lam == pytest.approx(0.8111111111111111)
    expected = expected_pfami(unet, abar, x0, [100], [lam], "fresh")
    close(score(target, "pfami", x0, timesteps=[100]), expected)
    # the neighbour is a 13-pixel centre crop (round), not a 12-pixel one (floor of 16 * 0.811)
    wrong = [x0] + [
        F.interpolate(x0[..., 2:14, 2:14], size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    ]
    e0, e1 = draws(x0, 0, ROWS), draws(x0, 1, ROWS)
    L0 = pix_mean((eps(unet, q(abar, wrong[0], 100, e0), 100) - e0) ** 2)
    L1 = pix_mean((eps(unet, q(abar, wrong[1], 100, e1), 100) - e1) ** 2)
    assert differ(expected, (L1 - L0) / L0)


# ----------------------------------------------------------------------------- 6. gradient_norm


def expected_gradient_norm(unet, abar, x0, timesteps, num_noise):
    params = list(unet.parameters())
    flags = [p.requires_grad for p in params]
    out = []
    try:
        for p in params:
            p.requires_grad_(True)
        for i, row in enumerate(ROWS.tolist()):
            xs, es, ts = [], [], []
            for t in timesteps:
                for k in range(num_noise):
                    e = noise(row, k, x0.shape[1:])
                    xs.append(q(abar, x0[i], t, e))
                    es.append(e)
                    ts.append(t)
            xs, es = torch.stack(xs), torch.stack(es)
            with torch.enable_grad():
                pred = unet(xs, torch.tensor(ts, dtype=torch.long)).sample
                loss = ((pred - es) ** 2).mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = sum((g.double() ** 2).sum() for g in grads if g is not None)
            out.append(-sq.sqrt())
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return torch.stack(out).float()


def test_gradient_norm_matches_the_paper(unet, target, abar, x0):
    expected = expected_gradient_norm(unet, abar, x0, [50, 200], 2)
    got = score(target, "gradient_norm", x0, grad=True, timesteps=[50, 200], num_noise=2)
    close(got, expected)
    assert (expected < 0).all() and differ(expected, -expected)  # a sign flip would fail


# ----------------------------------------------------------------------------- 7. reconstruction


def expected_reconstruction(unet, abar, x0, T, steps, metric, data_range=2.0, clamp=True):
    x = q(abar, x0, T, draws(x0, 0, ROWS))
    grid = torch.linspace(T, 0, steps + 1).round().long().tolist()
    for a, b in zip(grid[:-1], grid[1:]):
        x = move(abar, x, a, b, eps(unet, x, a))
    x_hat = x.clamp(-1, 1) if clamp else x
    if metric == "mse":
        return -pix_mean((x_hat - x0) ** 2)
    return structural_similarity_index_measure(x_hat, x0, data_range=data_range, reduction="none", kernel_size=7)


@pytest.mark.parametrize("metric", ["ssim", "mse"])
def test_reconstruction_matches_the_paper(unet, target, abar, x0, metric):
    expected = expected_reconstruction(unet, abar, x0, 100, 4, metric)
    got = score(target, "reconstruction", x0, timestep=100, steps=4, metric=metric)
    close(got, expected)
    # NB: with torchmetrics' default gaussian_kernel=True, kernel_size is ignored (the window is
    # int(3.5 * sigma + 0.5) * 2 + 1 = 11 pixels for sigma 1.5), so kernel 7 vs 11 cannot be told apart here.
    if metric == "ssim":  # pixels in [-1, 1] have data_range 2, not 1
        assert differ(expected, expected_reconstruction(unet, abar, x0, 100, 4, metric, data_range=1.0))
    else:
        assert differ(expected, -pix_sum((x0 - x0.mean()) ** 2))  # sanity: a real recomputation


def test_reconstruction_default_metric_is_ssim(unet, target, abar, x0):
    close(
        score(target, "reconstruction", x0, timestep=100, steps=4),
        expected_reconstruction(unet, abar, x0, 100, 4, "ssim"),
    )


# ----------------------------------------------------------------------------- 8. graybox


def graybox_terms(unet, abar, x0, grid_step, truncation, clip=False):
    e = draws(x0, 0, ROWS)
    L, ident = [], []
    for t in range(grid_step, truncation + 1, grid_step):
        s = t - grid_step
        xt = q(abar, x0, t, e)
        pred = eps(unet, xt, t)
        x0_pred = (xt - (1 - abar[t]).sqrt() * pred) / abar[t].sqrt()
        if clip:
            x0_pred = x0_pred.clamp(-1, 1)
        out = abar[s].sqrt() * x0_pred + (1 - abar[s]).sqrt() * pred
        L.append(pix_mean((out - q(abar, x0, s, e)) ** 2))
        c = (1 - abar[s]).sqrt() - (abar[s] / abar[t]).sqrt() * (1 - abar[t]).sqrt()
        ident.append(c**2 * pix_mean((pred - e) ** 2))
    return torch.stack(L, 1), torch.stack(ident, 1)


def test_graybox_formula_is_a_plain_ddim_step(unet, abar, x0):
    """Cross-check of the expected side: my DDIM step equals diffusers' DDIMScheduler.step (eta 0, no clipping)."""
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(1000 // 50)
    e = draws(x0, 0, ROWS)
    for t in (50, 100, 150):
        xt = q(abar, x0, t, e)
        pred = eps(unet, xt, t)
        mine = move(abar, xt, t, t - 50, pred)
        theirs = sched.step(pred, t, xt, eta=0.0).prev_sample
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip_sample", [True, False])
def test_graybox_matches_the_paper(unet, abar, x0, clip_sample):
    target = make_target(unet, clip_sample=clip_sample)
    assert bool(target.scheduler.config.clip_sample) == clip_sample
    L, ident = graybox_terms(unet, abar, x0, 50, 150)
    torch.testing.assert_close(L, ident, rtol=1e-4, atol=1e-8)  # the identity L~_t = c_t^2 * ||eps - e||^2
    expected = -L.mean(1)
    got = score(target, "graybox", x0, grid_step=50, truncation=150)
    close(got, expected)
    # clipping the predicted x0 (as the exported scheduler's clip_sample would) changes the score here
    Lc, _ = graybox_terms(unet, abar, x0, 50, 150, clip=True)
    assert differ(expected, -Lc.mean(1))


def test_graybox_matches_the_paper_with_default_settings(unet, target, abar, x0):
    L, ident = graybox_terms(unet, abar, x0, 20, 200)
    assert L.shape[1] == 10
    torch.testing.assert_close(L, ident, rtol=1e-4, atol=1e-8)
    close(score(target, "graybox", x0), -L.mean(1))


# ----------------------------------------------------------------------------- 9. blackbox


def test_blackbox_matches_the_paper(unet, target, x0):
    attack = ATTACKS["blackbox"](num_samples=6, steps=2).bind(target)
    samples = attack.samples.detach().float()
    assert samples.shape == (6, 1, 16, 16)
    assert samples.min() >= -1 and samples.max() <= 1
    with torch.inference_mode():
        got = attack.score(x0, ROWS).clone().float()
    a, b = x0.flatten(1).double(), samples.flatten(1).double()
    dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).sqrt()  # (B, N)
    expected = -dist.min(1).values
    close(got, expected.float())
    assert differ(expected.float(), -(dist**2).min(1).values.float())  # a distance, not its square
    assert differ(expected.float(), -dist.mean(1).float())  # the nearest sample, not the average
