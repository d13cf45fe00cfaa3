"""Independent recomputations of the learned attacks' features and of LiRA's score.

Every expected value here is recomputed from the papers' equations with plain torch code written
in this file (its own seeded noise, its own DDIM moves, crops, gradient norms and Gaussian
log-densities); nothing is imported from the implementation except the interface under test:
`ATTACKS[name](**settings).bind(target)` with `features` / `fit` / `decision`, and
`lab.attacks.lira.lira_scores`.

- gsa1 / gsa2 (Pang et al.): per-parameter-tensor gradient norms of the diffusion loss, taken
  after (GSA1) or before (GSA2) averaging over the timesteps.
- secmi_nn (Duan et al.): |x~_t - x_rec_t| maps after deterministic DDIM inversion to t_sec - k.
- pfami_nn (Fu et al.): relative loss change under centre-crop-resize neighbours.
- blind: the pixels themselves.
- classifiers: near-perfect training AUC on clearly separable synthetic features, and a fitted
  decision that depends on the labels.
- LiRA (Carlini et al.): online / offline, per-example / global variance, on hand-made tensors.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import move, q
from helpers import noise as draw  # draw d of a split row (pfami_expected has a `noise` setting)
from sklearn.metrics import roc_auc_score

diffusers = pytest.importorskip("diffusers")

RTOL, ATOL = 1e-4, 1e-6


# --------------------------------------------------------------------------- fixture


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: one intra-op thread avoids OpenMP oversubscription on a busy 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def setup():
    """(target, reference copy of the unet, abar, x0, rows): a tiny perturbed UNet on 16x16 images."""
    from helpers import random_unet

    from lab.targets.load import Target

    unet = random_unet()
    ref = copy.deepcopy(unet).eval()  # our own copy: `bind` may switch requires_grad off on the target's
    for p in ref.parameters():
        p.requires_grad_(True)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    gx = torch.Generator().manual_seed(7)
    x0 = (torch.rand((4, 1, 16, 16), generator=gx) * 2 - 1).clamp(-1, 1)
    rows = torch.tensor([3, 0, 7, 12])
    target = Target(unet=unet, scheduler=scheduler, split=None, split_path=None, path=None)
    return target, ref, abar, x0, rows


def bound(target, name, **settings):
    from lab.attacks import ATTACKS

    return ATTACKS[name](**settings).bind(target)


# --------------------------------------------------------------------------- plain-torch helpers


def eps(unet, x: torch.Tensor, t: int) -> torch.Tensor:
    return unet(x, torch.full((x.shape[0],), int(t), dtype=torch.long)).sample


def loss_t(unet, abar, x0, t, e):
    """Per-example mean-pixel diffusion loss: (B,)."""
    return (eps(unet, q(abar, x0, t, e), t) - e).pow(2).flatten(1).mean(1)


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert isinstance(actual, torch.Tensor), type(actual)
    actual = actual.detach().cpu().to(torch.float64)
    expected = expected.detach().cpu().to(torch.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- GSA


def gsa_expected(ref, abar, x0, rows, timesteps, which: int) -> torch.Tensor:
    params = list(ref.parameters())
    out = []
    for i in range(x0.shape[0]):
        xi = x0[i : i + 1]
        losses = [
            loss_t(ref, abar, xi, t, draw(rows[i], j, x0.shape[1:]).unsqueeze(0))[0] for j, t in enumerate(timesteps)
        ]
        if which == 1:
            grads = torch.autograd.grad(torch.stack(losses).mean(), params, allow_unused=True)
            feats = [torch.zeros(()) if g is None else g.norm() for g in grads]
        else:
            feats = [torch.zeros(()) for _ in params]
            for L in losses:
                grads = torch.autograd.grad(L, params, allow_unused=True, retain_graph=False)
                feats = [f + (0 if g is None else g.norm()) for f, g in zip(feats, grads)]
            feats = [f / len(timesteps) for f in feats]
        out.append(torch.stack([f.detach() for f in feats]))
    return torch.stack(out)


@pytest.fixture(scope="module")
def gsa_both(setup):
    target, ref, abar, x0, rows = setup
    return {w: gsa_expected(ref, abar, x0, rows, [99, 499], w) for w in (1, 2)}


def test_gsa_expected_features_differ_between_gsa1_and_gsa2(setup, gsa_both):
    _, ref, *_ = setup
    assert gsa_both[1].shape == (4, len(list(ref.parameters())))
    assert (gsa_both[1] > 0).any()
    assert not torch.allclose(gsa_both[1], gsa_both[2], rtol=1e-3)
    # triangle inequality: norm of the mean gradient <= mean of the norms
    assert (gsa_both[1] <= gsa_both[2] * (1 + 1e-4) + 1e-7).all()


@pytest.mark.parametrize("name,which", [("gsa1", 1), ("gsa2", 2)])
def test_gsa_features_are_per_parameter_gradient_norms(setup, gsa_both, name, which):
    target, ref, abar, x0, rows = setup
    attack = bound(target, name, timesteps=[99, 499], trees=200)
    feats = attack.features(x0.clone(), rows.clone())
    assert_close(feats, gsa_both[which], rtol=RTOL, atol=1e-6)
    other = gsa_both[3 - which]
    assert not torch.allclose(feats.detach().double(), other.double(), rtol=1e-3)


# --------------------------------------------------------------------------- SecMI


@torch.no_grad()
def secmi_expected(ref, abar, x0, t_sec, k):
    x = x0.clone()
    for s in range(0, t_sec - 2 * k + 1, k):
        x = move(abar, x, s, s + k, eps(ref, x, s))
    x_tilde = x
    x_up = move(abar, x_tilde, t_sec - k, t_sec, eps(ref, x_tilde, t_sec - k))
    x_rec = move(abar, x_up, t_sec, t_sec - k, eps(ref, x_up, t_sec))
    return (x_tilde - x_rec).abs()


@pytest.mark.parametrize("t_sec,interval", [(100, 10), (60, 20)])
def test_secmi_nn_features_are_t_error_maps(setup, t_sec, interval):
    target, ref, abar, x0, rows = setup
    attack = bound(target, "secmi_nn", t_sec=t_sec, interval=interval)
    with torch.inference_mode():
        feats = attack.features(x0.clone(), rows.clone())
    expected = secmi_expected(ref, abar, x0, t_sec, interval)
    assert tuple(feats.shape) == tuple(x0.shape)
    assert_close(feats, expected, rtol=RTOL, atol=1e-5)


def test_secmi_nn_inversion_walks_the_documented_grid(setup):
    # sanity of our own reference: the two settings give different maps
    _, ref, abar, x0, _ = setup
    assert not torch.allclose(secmi_expected(ref, abar, x0, 100, 10), secmi_expected(ref, abar, x0, 60, 20))


# --------------------------------------------------------------------------- PFAMI


def crop_resize(x, lam):
    h = x.shape[-1]
    side = max(1, int(round(h * lam)))
    top = (h - side) // 2
    crop = x[:, :, top : top + side, top : top + side]
    return F.interpolate(crop, size=(h, h), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def pfami_expected(ref, abar, x0, rows, timesteps, strengths, noise):
    B = x0.shape[0]
    copies = [x0] + [crop_resize(x0, lam) for lam in strengths]
    n = len(strengths)
    out = torch.zeros(B, len(timesteps), n)
    for j, t in enumerate(timesteps):
        losses = []
        for c, xc in enumerate(copies):
            d = j * (1 + n) + c if noise == "fresh" else j
            e = torch.stack([draw(rows[i], d, x0.shape[1:]) for i in range(B)])
            losses.append(loss_t(ref, abar, xc, t, e))
        for k in range(n):
            out[:, j, k] = (losses[1 + k] - losses[0]) / losses[0]
    return out.flatten(1)


@pytest.mark.parametrize("noise", ["fresh", "shared"])
def test_pfami_nn_features_are_relative_loss_fluctuations(setup, noise):
    target, ref, abar, x0, rows = setup
    timesteps, strengths = [0, 300], [0.9, 0.7]
    attack = bound(target, "pfami_nn", timesteps=timesteps, strengths=strengths, noise=noise)
    with torch.inference_mode():
        feats = attack.features(x0.clone(), rows.clone())
    expected = pfami_expected(ref, abar, x0, rows, timesteps, strengths, noise)
    assert tuple(feats.shape) == (4, 4)
    assert_close(feats, expected, rtol=RTOL, atol=1e-5)


def test_pfami_nn_noise_modes_differ(setup):
    _, ref, abar, x0, rows = setup
    a = pfami_expected(ref, abar, x0, rows, [0, 300], [0.9, 0.7], "fresh")
    b = pfami_expected(ref, abar, x0, rows, [0, 300], [0.9, 0.7], "shared")
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------- blind


def test_blind_features_are_the_pixels(setup):
    target, _, _, x0, rows = setup
    attack = bound(target, "blind", C=0.01)
    with torch.inference_mode():
        feats = attack.features(x0.clone(), rows.clone())
    assert_close(feats, x0.flatten(1), rtol=0, atol=0)


# --------------------------------------------------------------------------- classifiers

N_PER = 18


def separable(shape, seed: int, shift: float = 1.5, dims=slice(0, 8)):
    """18 members then 18 non-members; members shifted by +shift std in `dims` of the flat features."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn((2 * N_PER, *shape), generator=g)
    flat = feats.view(2 * N_PER, -1)
    flat[:N_PER, dims] += shift + torch.rand((N_PER, flat[:, dims].shape[1]), generator=g) * 0.5
    labels = torch.zeros(2 * N_PER, dtype=torch.bool)
    labels[:N_PER] = True
    return feats, labels


def secmi_maps(seed: int):
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand((2 * N_PER, 1, 16, 16), generator=g) * 0.1
    feats[:N_PER, :, 4:10, 4:10] += 0.3 + 0.1 * torch.rand((N_PER, 1, 6, 6), generator=g)
    labels = torch.zeros(2 * N_PER, dtype=torch.bool)
    labels[:N_PER] = True
    return feats, labels


CLASSIFIERS = {
    "secmi_nn": ({"t_sec": 100, "interval": 10}, lambda s: secmi_maps(s)),
    "pfami_nn": ({}, lambda s: separable((100,), s, dims=slice(0, 20))),
    "gsa1": ({"trees": 200}, lambda s: separable((20,), s, shift=2.0, dims=slice(0, 6))),
    "gsa2": ({"trees": 200}, lambda s: separable((20,), s, shift=2.0, dims=slice(0, 6))),
    "blind": ({"C": 0.01}, lambda s: separable((256,), s, shift=2.0, dims=slice(0, 40))),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_separates_its_training_features(setup, name):
    target = setup[0]
    settings, make = CLASSIFIERS[name]
    feats, labels = make(11)
    attack = bound(target, name, **settings)
    attack.fit(feats.clone(), labels.clone())
    scores = as_numpy(attack.decision(feats.clone())).reshape(-1)
    assert scores.shape == (2 * N_PER,)
    assert np.isfinite(scores).all()
    auc = roc_auc_score(labels.numpy(), scores)
    assert auc >= 0.99, f"{name}: training AUC {auc:.3f} on separable features"


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_decision_depends_on_the_labels(setup, name):
    target = setup[0]
    settings, make = CLASSIFIERS[name]
    feats, labels = make(12)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(5))
    shuffled = labels[perm]
    assert not torch.equal(shuffled, labels)
    a = bound(target, name, **settings)
    a.fit(feats.clone(), labels.clone())
    sa = as_numpy(a.decision(feats.clone())).reshape(-1)
    b = bound(target, name, **settings)
    b.fit(feats.clone(), shuffled.clone())
    sb = as_numpy(b.decision(feats.clone())).reshape(-1)
    assert np.ptp(sa) > 0, f"{name}: constant decision on 36 rows"
    assert not np.allclose(sa, sb), f"{name}: decision unchanged by shuffling the labels"


# --------------------------------------------------------------------------- LiRA


def lira_expected(loss, refs, is_in, global_variance, online):
    """Loop-based recomputation in float64 (no vectorised tricks shared with an implementation)."""
    loss, refs = loss.double(), refs.double()
    K, B = refs.shape

    def stats(mask):
        mus, vars_, ns = [], [], []
        for b in range(B):
            vals = [float(refs[k, b]) for k in range(K) if bool(mask[k, b])]
            n = len(vals)
            mu = sum(vals) / n if n else float("nan")
            ss = sum((v - mu) ** 2 for v in vals) if n else 0.0
            mus.append(mu), vars_.append(ss), ns.append(n)
        if global_variance:
            denom = sum(ns) - sum(1 for n in ns if n >= 1)
            pooled = sum(vars_) / denom if denom > 0 else float("nan")
            var = [pooled] * B
        else:
            var = [ss / (n - 1) if n >= 2 else float("nan") for ss, n in zip(vars_, ns)]
        s = [max(math.sqrt(v), 1e-4) if v == v else float("nan") for v in var]
        return mus, s

    mu_in, s_in = stats(is_in)
    mu_out, s_out = stats(~is_in)

    def logpdf(x, mu, s):
        return -0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((x - mu) / s) ** 2

    out = []
    for b in range(B):
        x = float(loss[b])
        if online:
            out.append(logpdf(x, mu_in[b], s_in[b]) - logpdf(x, mu_out[b], s_out[b]))
        else:
            out.append((mu_out[b] - x) / s_out[b])
    return torch.tensor(out, dtype=torch.float64)


def lira_fn():
    from lab.attacks.lira import lira_scores

    return lira_scores


# K = 4 references, B = 3 examples; every example is "in" for exactly two references.
REFS = torch.tensor(
    [
        [1.0, 3.0, 0.5],
        [1.4, 2.0, 0.9],
        [2.0, 2.4, 1.5],
        [2.6, 2.2, 2.5],
    ],
    dtype=torch.float64,
)
IS_IN = torch.tensor(
    [
        [True, False, True],
        [True, True, False],
        [False, False, True],
        [False, True, False],
    ]
)
# example 0: in {1.0, 1.4} (mu 1.2, var 0.08), out {2.0, 2.6} (mu 2.3, var 0.18)
# example 1: in {2.0, 2.2} (mu 2.1, var 0.02), out {3.0, 2.4} (mu 2.7, var 0.18)
# example 2: in {0.5, 1.5} (mu 1.0, var 0.50), out {0.9, 2.5} (mu 1.7, var 1.28)
L = torch.tensor([1.25, 2.6, 1.1], dtype=torch.float64)  # near "in", near "out", near "in"


def call_lira(loss, refs, is_in, global_variance, online):
    score = lira_fn()(loss.clone(), refs.clone(), is_in.clone(), global_variance=global_variance, online=online)
    assert isinstance(score, torch.Tensor) and tuple(score.shape) == (loss.shape[0],)
    return score


def test_lira_online_per_example_variance():
    score = call_lira(L, REFS, IS_IN, global_variance=False, online=True)
    expected = lira_expected(L, REFS, IS_IN, False, True)
    # hand check for example 0: log N(1.25; 1.2, 0.08) - log N(1.25; 2.3, 0.18)
    hand0 = (-0.5 * math.log(0.08) - 0.5 * 0.05**2 / 0.08) - (-0.5 * math.log(0.18) - 0.5 * 1.05**2 / 0.18)
    assert expected[0].item() == pytest.approx(hand0, rel=1e-12)
    assert_close(score, expected, rtol=1e-5, atol=1e-6)


def test_lira_online_global_variance():
    score = call_lira(L, REFS, IS_IN, global_variance=True, online=True)
    expected = lira_expected(L, REFS, IS_IN, True, True)
    # pooled in: (0.08 + 0.02 + 0.50) / (6 - 3) = 0.2; pooled out: (0.18 + 0.18 + 1.28) / 3
    v_in, v_out = 0.6 / 3, 1.64 / 3
    hand = [
        (-0.5 * math.log(v_in) - 0.5 * (loss - mi) ** 2 / v_in)
        - (-0.5 * math.log(v_out) - 0.5 * (loss - mo) ** 2 / v_out)
        for loss, mi, mo in zip(L.tolist(), [1.2, 2.1, 1.0], [2.3, 2.7, 1.7])
    ]
    torch.testing.assert_close(expected, torch.tensor(hand, dtype=torch.float64), rtol=1e-10, atol=1e-10)
    assert_close(score, expected, rtol=1e-5, atol=1e-6)


def test_lira_online_global_variance_with_a_single_in_reference():
    # example 2 is "in" once only: it adds 0 to the pooled sum and 0 to the degrees of freedom
    is_in = IS_IN.clone()
    is_in[0, 2] = False  # example 2: in {1.5}, out {0.5, 0.9, 2.5}
    score = call_lira(L, REFS, is_in, global_variance=True, online=True)
    expected = lira_expected(L, REFS, is_in, True, True)
    assert_close(score, expected, rtol=1e-5, atol=1e-6)


def test_lira_offline_per_example_variance():
    score = call_lira(L, REFS, IS_IN, global_variance=False, online=False)
    expected = lira_expected(L, REFS, IS_IN, False, False)
    hand = torch.tensor(
        [(2.3 - 1.25) / math.sqrt(0.18), (2.7 - 2.6) / math.sqrt(0.18), (1.7 - 1.1) / math.sqrt(1.28)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(expected, hand, rtol=1e-10, atol=1e-10)
    assert_close(score, expected, rtol=1e-5, atol=1e-6)


def test_lira_offline_global_variance():
    score = call_lira(L, REFS, IS_IN, global_variance=True, online=False)
    s_out = math.sqrt(1.64 / 3)
    hand = torch.tensor([(2.3 - 1.25) / s_out, (2.7 - 2.6) / s_out, (1.7 - 1.1) / s_out], dtype=torch.float64)
    torch.testing.assert_close(lira_expected(L, REFS, IS_IN, True, False), hand, rtol=1e-10, atol=1e-10)
    assert_close(score, hand, rtol=1e-5, atol=1e-6)


def test_lira_offline_when_no_example_is_ever_in():
    is_in = torch.zeros_like(IS_IN)
    for gv in (False, True):
        score = call_lira(L, REFS, is_in, global_variance=gv, online=False)
        assert_close(score, lira_expected(L, REFS, is_in, gv, False), rtol=1e-5, atol=1e-6)


def test_lira_clamps_the_standard_deviation():
    refs = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)  # zero spread
    is_in = torch.zeros((3, 2), dtype=torch.bool)
    loss = torch.tensor([0.999, 2.0005], dtype=torch.float64)
    score = call_lira(loss, refs, is_in, global_variance=False, online=False)
    assert_close(score, torch.tensor([0.001 / 1e-4, -0.0005 / 1e-4], dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_lira_online_sign_follows_in_and_out():
    for gv in (False, True):
        score = call_lira(L, REFS, IS_IN, global_variance=gv, online=True)
        # low loss near mu_in -> member-like (positive); near mu_out -> negative
        assert (score > 0).tolist() == [True, False, True], (gv, score)
        swapped = call_lira(L, REFS, ~IS_IN, global_variance=gv, online=True)
        assert (swapped > 0).tolist() == [False, True, False], (gv, swapped)
        assert_close(swapped, -score.double(), rtol=1e-5, atol=1e-6)
