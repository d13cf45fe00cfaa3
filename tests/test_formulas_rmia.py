"""Independent recomputation of RMIA's score (Zarifzadeh, Liu, Cheng, Shokri, ICML 2024) as the lab
defines it for diffusion models.

Every expected value here is recomputed with plain Python loops written in this file from the
lab's documented definitions; nothing is imported from the implementation except the interface
under test: `lab.attacks.rmia.rmia_scores` and `ATTACKS["rmia"]` with `finalize`.

The statistic l(x) is the log of the example's mean per-dimension squared denoising error, so
    Pr(x | theta)  = exp(-exp(l(x)))                                   (any model)
    Pr(x) online   = 1/2 (mean_{m: x in}  Pr(x | theta_m) + mean_{m: x out} Pr(x | theta_m))
    Pr(x) offline  = 1/2 ((1 + a) mean_{m: x out} Pr(x | theta_m) + (1 - a))
    LR(x, z)       = [Pr(x | target) / Pr(x)] / [Pr(z | target) / Pr(z)]
    score(x)       = #{z in population, z != x : LR(x, z) > gamma} / #{z in population, z != x}
with Pr(z) for a population example z given by the same rule and z's own in/out references.

Each formula test is paired with mutants of the expected function (an example counting itself,
>= for >, a plain mean over all references online, offline without the (1 + a) / (1 - a)
correction, the loss or exp(-l) in place of exp(-loss), population examples treated as "out" for
every reference): each must change the scores on the same fixture, so the comparison has teeth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

SCORE_ATOL = 1e-9  # scores are fractions k / n: anything but an exact match is a different count
TIE_MARGIN = 1e-6  # |log LR - log gamma| for every pair that is not an exact, deliberate tie


# --------------------------------------------------------------------------- expected


def rmia_lr(target, refs, is_in, online, offline_a, *, mutant=None):
    """(B, B) list of LR(x, z) and (B,) ratios Pr(x | target) / Pr(x), from the definitions."""
    target = [float(v) for v in target.double()]
    K, B = refs.shape
    refs = [[float(refs[k, b]) for b in range(B)] for k in range(K)]
    is_in = [[bool(is_in[k, b]) for b in range(B)] for k in range(K)]

    def prob(log_loss):
        if mutant == "loss":  # the mean loss itself
            return math.exp(log_loss)
        if mutant == "exp_neg_l":  # forgetting that l is a log: exp(-l)
            return math.exp(-log_loss)
        return math.exp(-math.exp(log_loss))

    def mean(xs):
        assert xs, "an example with no reference on the side the rule needs"
        return sum(xs) / len(xs)

    def pr_marginal(b, all_out=False):
        ps = [prob(refs[k][b]) for k in range(K)]
        ins = [ps[k] for k in range(K) if is_in[k][b] and not all_out]
        outs = [ps[k] for k in range(K) if not is_in[k][b] or all_out]
        if online:
            if mutant == "plain_mean" or all_out:
                return mean(ps)
            return 0.5 * (mean(ins) + mean(outs))
        if mutant == "no_correction":
            return mean(outs)
        return 0.5 * ((1.0 + offline_a) * mean(outs) + (1.0 - offline_a))

    ratio_x = [prob(target[b]) / pr_marginal(b) for b in range(B)]
    # as a population example z, b's Pr(z) (differs from Pr(x) only for the "population all out" mutant)
    ratio_z = [prob(target[b]) / pr_marginal(b, all_out=(mutant == "population_all_out")) for b in range(B)]
    lr = [[ratio_x[x] / ratio_z[z] for z in range(B)] for x in range(B)]
    return lr, ratio_x


def rmia_expected(target, refs, is_in, population, online, offline_a=0.3, gamma=1.0, *, mutant=None):
    """(B,) float64 RMIA scores by explicit loops; `mutant` names a deliberate mistake."""
    lr, _ = rmia_lr(target, refs, is_in, online, offline_a, mutant=mutant)
    B = len(lr)
    pop = [z for z in range(B) if bool(population[z])]
    out = []
    for x in range(B):
        zs = [z for z in pop if z != x or mutant == "self_counts"]
        if mutant == "geq":
            hits = sum(1 for z in zs if lr[x][z] >= gamma)
        else:
            hits = sum(1 for z in zs if lr[x][z] > gamma)
        out.append(hits / len(zs))
    return torch.tensor(out, dtype=torch.float64)


def assert_no_near_ties(target, refs, is_in, population, online, offline_a, gamma, exact_ties=()):
    """The fixture is far from LR == gamma on every pair except the deliberate exact ties, so a
    correct implementation's rounding cannot flip a comparison."""
    lr, _ = rmia_lr(target, refs, is_in, online, offline_a)
    B = len(lr)
    for x in range(B):
        for z in range(B):
            if z == x or not bool(population[z]) or {x, z} in [set(t) for t in exact_ties]:
                continue
            assert abs(math.log(lr[x][z]) - math.log(gamma)) > TIE_MARGIN, (x, z, lr[x][z])


# --------------------------------------------------------------------------- interface


def rmia_fn():
    from lab.attacks.rmia import rmia_scores

    return rmia_scores


def call_rmia(target, refs, is_in, population, online, offline_a=0.3, gamma=1.0):
    args = (target.clone(), refs.clone(), is_in.clone(), population.clone())
    score = rmia_fn()(*args, online, offline_a=offline_a, gamma=gamma)
    assert isinstance(score, torch.Tensor), type(score)
    assert score.dtype == torch.float64, score.dtype
    assert tuple(score.shape) == (target.shape[0],), score.shape
    for a, b in zip(args, (target, refs, is_in, population)):
        assert torch.equal(a, b), "rmia_scores changed its inputs"
    return score


def assert_scores(actual, expected):
    actual = torch.as_tensor(actual).detach().cpu().to(torch.float64)
    expected = expected.detach().cpu().to(torch.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=SCORE_ATOL)


# --------------------------------------------------------------------------- fixture

K, B = 4, 12
# how many of the K references had each example "in": unbalanced (1 or 3) and balanced (2);
# every example has at least one "in" and one "out" reference, so both rules are defined
IN_COUNTS = [1, 3, 2, 1, 3, 2, 1, 2, 3, 1, 3, 2]
DUP = (2, 7)  # example 7 is an exact copy of example 2: LR(2, 7) == LR(7, 2) == 1 exactly
POPULATION_ROWS = [0, 2, 4, 5, 7, 9, 11]  # a subset: both kinds of in/out counts, and the duplicate pair


def make_fixture():
    g = torch.Generator().manual_seed(2024)
    refs = -2.0 + 3.0 * torch.rand((K, B), generator=g, dtype=torch.float64)  # l in [-2, 1]: Pr in [0.07, 0.87]
    is_in = torch.zeros((K, B), dtype=torch.bool)
    for b, n in enumerate(IN_COUNTS):
        is_in[torch.randperm(K, generator=g)[:n], b] = True
    target = refs.mean(0) + 0.7 * torch.randn(B, generator=g, dtype=torch.float64)
    a, b = DUP
    refs[:, b], is_in[:, b], target[b] = refs[:, a], is_in[:, a], target[a]
    population = torch.zeros(B, dtype=torch.bool)
    population[POPULATION_ROWS] = True
    return target, refs, is_in, population


TARGET, REFS, IS_IN, POPULATION = make_fixture()
CONFIGS = [(online, a, gamma) for online in (True, False) for a in (0.3, 0.0, 1.0) for gamma in (1.0, 1.5)]


def cfg_id(c):
    online, a, gamma = c
    return f"{'online' if online else 'offline'}-a{a}-gamma{gamma}"


def test_fixture_is_as_described():
    assert (IS_IN.sum(0) == torch.tensor(IN_COUNTS)).all()
    assert ((~IS_IN).sum(0) >= 1).all() and (IS_IN.sum(0) >= 1).all()
    assert torch.equal(REFS[:, DUP[0]], REFS[:, DUP[1]]) and TARGET[DUP[0]] == TARGET[DUP[1]]
    for online, a, gamma in CONFIGS:
        assert_no_near_ties(TARGET, REFS, IS_IN, POPULATION, online, a, gamma, exact_ties=[DUP])
        exp = rmia_expected(TARGET, REFS, IS_IN, POPULATION, online, a, gamma)
        assert 0 < len(set(exp.tolist())) and exp.min() < exp.max(), "degenerate scores"


# --------------------------------------------------------------------------- hand checks of the expected side

# one reference, every example "out", offline, a = 1: Pr(x) = Pr(x | theta_ref), so the ratio is
# exp(-loss_target) / exp(-loss_ref) = exp(loss_ref - loss_target). Losses 0.5, 1.0, 2.0 vs 1.0 give
# ratios e^0.5, 1, e^-1; LR(0, 1) = e^0.5 = 1.65, LR(0, 2) = e^1.5 = 4.48, LR(1, 2) = e = 2.72.
HAND_T = torch.log(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
HAND_R = torch.log(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64))
HAND_IN = torch.zeros((1, 3), dtype=torch.bool)


@pytest.mark.parametrize(
    "population, gamma, hand",
    [
        ([True, True, True], 1.0, [2 / 2, 1 / 2, 0 / 2]),
        ([True, True, True], 2.0, [1 / 2, 1 / 2, 0 / 2]),  # LR(0, 1) = 1.65 is not above 2
        ([False, True, True], 1.0, [2 / 2, 1 / 1, 0 / 1]),  # x = 0 is not in the population: both z count
        ([False, True, True], 5.0, [0 / 2, 0 / 1, 0 / 1]),
    ],
)
def test_rmia_hand_values(population, gamma, hand):
    population = torch.tensor(population)
    expected = rmia_expected(HAND_T, HAND_R, HAND_IN, population, online=False, offline_a=1.0, gamma=gamma)
    torch.testing.assert_close(expected, torch.tensor(hand, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_scores(call_rmia(HAND_T, HAND_R, HAND_IN, population, False, offline_a=1.0, gamma=gamma), expected)


def test_rmia_hand_marginals():
    """Pr(x) on one example by hand: online halves the in- and out-means, offline corrects the out-mean."""
    l_refs = [-1.0, 0.0, 0.5, -0.5]
    is_in = [True, False, False, False]
    p = [math.exp(-math.exp(v)) for v in l_refs]
    online = 0.5 * (p[0] + (p[1] + p[2] + p[3]) / 3)
    offline = 0.5 * (1.3 * (p[1] + p[2] + p[3]) / 3 + 0.7)
    refs = torch.tensor(l_refs, dtype=torch.float64).view(K, 1)
    mask = torch.tensor(is_in).view(K, 1)
    t = torch.tensor([-0.3], dtype=torch.float64)
    pt = math.exp(-math.exp(-0.3))
    assert rmia_lr(t, refs, mask, True, 0.3)[1][0] == pytest.approx(pt / online, rel=1e-14)
    assert rmia_lr(t, refs, mask, False, 0.3)[1][0] == pytest.approx(pt / offline, rel=1e-14)


# --------------------------------------------------------------------------- formula


@pytest.mark.parametrize("config", CONFIGS, ids=cfg_id)
def test_rmia_matches_the_definition(config):
    online, a, gamma = config
    expected = rmia_expected(TARGET, REFS, IS_IN, POPULATION, online, a, gamma)
    score = call_rmia(TARGET, REFS, IS_IN, POPULATION, online, offline_a=a, gamma=gamma)
    assert_scores(score, expected)


def test_rmia_online_ignores_offline_a():
    ref = call_rmia(TARGET, REFS, IS_IN, POPULATION, True, offline_a=0.3)
    for a in (0.0, 0.7, 1.0):
        assert_scores(call_rmia(TARGET, REFS, IS_IN, POPULATION, True, offline_a=a), ref)


# --------------------------------------------------------------------------- teeth

MUTANT_CASES = (
    # an example counted among its own population: changes the denominator (and, with >=, the count)
    [("self_counts", c) for c in CONFIGS]
    # >= instead of >: only exact ties (the duplicate pair at gamma = 1) tell them apart
    + [("geq", c) for c in CONFIGS if c[2] == 1.0]
    # online Pr(x) as the plain mean over all K references, with 1-in/3-out and 3-in/1-out examples
    + [("plain_mean", c) for c in CONFIGS if c[0]]
    # offline without the (1 + a) / (1 - a) correction (identical to the correct rule at a = 1)
    + [("no_correction", c) for c in CONFIGS if not c[0] and c[1] != 1.0]
    # the mean loss exp(l), or exp(-l), in place of exp(-exp(l))
    + [("loss", c) for c in CONFIGS]
    + [("exp_neg_l", c) for c in CONFIGS]
    # Privacy Meter's convention: population examples "out" for every reference (the lab uses z's own)
    + [("population_all_out", c) for c in CONFIGS]
)


@pytest.mark.parametrize("mutant, config", MUTANT_CASES, ids=[f"{m}-{cfg_id(c)}" for m, c in MUTANT_CASES])
def test_rmia_mutants_change_the_scores(mutant, config):
    online, a, gamma = config
    expected = rmia_expected(TARGET, REFS, IS_IN, POPULATION, online, a, gamma)
    wrong = rmia_expected(TARGET, REFS, IS_IN, POPULATION, online, a, gamma, mutant=mutant)
    assert not torch.allclose(expected, wrong, rtol=0, atol=SCORE_ATOL), f"{mutant} leaves the scores unchanged"
    score = call_rmia(TARGET, REFS, IS_IN, POPULATION, online, offline_a=a, gamma=gamma)
    assert_scores(score, expected)
    assert not torch.allclose(score, wrong, rtol=0, atol=SCORE_ATOL)


def test_offline_correction_vanishes_at_a_equal_one():
    """Consistency of the expected side: at a = 1, 1/2 ((1 + a) m + (1 - a)) = m."""
    for gamma in (1.0, 1.5):
        e = rmia_expected(TARGET, REFS, IS_IN, POPULATION, False, 1.0, gamma)
        m = rmia_expected(TARGET, REFS, IS_IN, POPULATION, False, 1.0, gamma, mutant="no_correction")
        torch.testing.assert_close(e, m, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- properties


def test_references_equal_to_the_target_give_likelihood_ratio_one():
    """refs == target: offline with a = 1 (all out), and online (any in/out mix), give
    Pr(x | target) / Pr(x) = 1 for every example, so LR == 1 for every pair: no pair is above
    gamma = 1.5 and every pair is above gamma = 0.5 (robust to rounding at LR = 1 +- ulp)."""
    refs = TARGET.expand(K, B).clone()
    for online, is_in in ((False, torch.zeros_like(IS_IN)), (True, IS_IN)):
        for gamma, value in ((1.5, 0.0), (0.5, 1.0)):
            expected = rmia_expected(TARGET, refs, is_in, POPULATION, online, 1.0, gamma)
            torch.testing.assert_close(expected, torch.full((B,), value, dtype=torch.float64), rtol=0, atol=0)
            assert_scores(call_rmia(TARGET, refs, is_in, POPULATION, online, offline_a=1.0, gamma=gamma), expected)


@pytest.mark.parametrize("a", [0.0, 0.3, 0.6])
def test_offline_with_references_equal_to_the_target_ranks_by_loss(a):
    """refs == target, all out, offline with a < 1: Pr(x|target) / Pr(x) = 2p / ((1 + a) p + 1 - a),
    increasing in p = exp(-exp(l)), so LR(x, z) > 1 iff l(x) < l(z): score(x) is the fraction of
    the other population examples with a larger statistic."""
    target = torch.linspace(-1.5, 0.8, B, dtype=torch.float64)[
        torch.randperm(B, generator=torch.Generator().manual_seed(3))
    ]
    refs = target.expand(K, B).clone()
    is_in = torch.zeros((K, B), dtype=torch.bool)
    hand = []
    for x in range(B):
        zs = [z for z in POPULATION_ROWS if z != x]
        hand.append(sum(1 for z in zs if target[z] > target[x]) / len(zs))
    hand = torch.tensor(hand, dtype=torch.float64)
    torch.testing.assert_close(rmia_expected(target, refs, is_in, POPULATION, False, a, 1.0), hand, rtol=0, atol=1e-12)
    assert_scores(call_rmia(target, refs, is_in, POPULATION, False, offline_a=a, gamma=1.0), hand)


@pytest.mark.parametrize("online", [True, False])
def test_member_like_example_scores_higher(online):
    """Example 0's target loss is far below its references' (member-like); example 1's target
    statistic equals all of its references'. The member-like one must score higher."""
    g = torch.Generator().manual_seed(11)
    refs = -1.0 + 1.0 * torch.rand((K, B), generator=g, dtype=torch.float64)
    target = refs.mean(0) + 0.3 * torch.randn(B, generator=g, dtype=torch.float64)
    refs[:, 1] = -0.5
    target[1] = -0.5
    target[0] = refs[:, 0].min() - 2.0
    is_in = IS_IN.clone()
    score = call_rmia(target, refs, is_in, POPULATION, online, offline_a=0.3, gamma=1.0)
    expected = rmia_expected(target, refs, is_in, POPULATION, online, 0.3, 1.0)
    assert expected[0] > expected[1]
    assert score[0] > score[1]
    assert_scores(score, expected)


def test_scores_do_not_increase_with_gamma():
    for online in (True, False):
        s1 = call_rmia(TARGET, REFS, IS_IN, POPULATION, online, gamma=1.0)
        s2 = call_rmia(TARGET, REFS, IS_IN, POPULATION, online, gamma=1.5)
        assert (s2 <= s1).all() and (s2 < s1).any()


# --------------------------------------------------------------------------- RMIA.finalize


def make_split(n_val=6, n_test=4):
    from lab.data.split import MembershipSplit

    ids, roles, splits = [], [], []
    # interleave roles and eval splits so that no block of rows is a role or a split
    for i in range(n_val + n_test):
        for role in ("member", "nonmember"):
            ids.append(f"{role}:{i}")
            roles.append(role)
            splits.append("validation" if (i * 7) % (n_val + n_test) < n_val else "test")
    return MembershipSplit(ids=ids, roles=roles, eval_splits=splits, seed=0)


def finalize_fixture(seed=5):
    split = make_split()
    n = len(split.ids)
    g = torch.Generator().manual_seed(seed)
    is_in = torch.zeros((K, n), dtype=torch.bool)
    for r in range(n):
        is_in[torch.randperm(K, generator=g)[: 1 + r % 3], r] = True  # 1, 2 or 3 "in" of 4
    rows = np.random.default_rng(seed).permutation(n)
    refs = -2.0 + 3.0 * torch.rand((n, K), generator=g)
    values = torch.cat([refs.mean(1, keepdim=True) + 0.7 * torch.randn((n, 1), generator=g), refs], dim=1).float()
    return split, is_in, rows, values


def finalize_expected(
    split, is_in, rows, values, online, a, gamma, population_rule="validation_nonmembers", positional=False
):
    v = values.double()
    target, refs = v[:, 0], v[:, 1:].T
    mask = is_in[:, : len(rows)] if positional else is_in[:, torch.as_tensor(rows)]
    rule = {
        "validation_nonmembers": lambda r: split.roles[r] == "nonmember" and split.eval_splits[r] == "validation",
        "all_nonmembers": lambda r: split.roles[r] == "nonmember",
        "validation": lambda r: split.eval_splits[r] == "validation",
    }[population_rule]
    population = torch.tensor([rule(int(r)) for r in rows])
    return rmia_expected(target, refs, mask, population, online, a, gamma), (target, refs, mask, population)


FINALIZE_CASES = [(True, {}), (False, {}), (False, {"offline_a": 0.6, "gamma": 1.3}), (True, {"gamma": 1.3})]


@pytest.mark.parametrize(
    "online, settings", FINALIZE_CASES, ids=[f"{'online' if o else 'offline'}-{s}" for o, s in FINALIZE_CASES]
)
def test_finalize_end_to_end(online, settings):
    from lab.attacks import ATTACKS

    split, is_in, rows, values = finalize_fixture()
    a, gamma = settings.get("offline_a", 0.3), settings.get("gamma", 1.0)  # the class's documented defaults
    expected, args = finalize_expected(split, is_in, rows, values, online, a, gamma)
    target, refs, mask, population = args
    assert int(population.sum()) == len(split.select("nonmember", "validation")) == 6
    assert_no_near_ties(target, refs, mask, population, online, a, gamma)
    # teeth: the wrong population, or is_in taken by position instead of by split row, change the scores
    for wrong in (
        finalize_expected(split, is_in, rows, values, online, a, gamma, population_rule="all_nonmembers")[0],
        finalize_expected(split, is_in, rows, values, online, a, gamma, population_rule="validation")[0],
        finalize_expected(split, is_in, rows, values, online, a, gamma, positional=True)[0],
    ):
        assert not torch.allclose(expected, wrong, rtol=0, atol=SCORE_ATOL)

    attack = ATTACKS["rmia"](**settings)
    attack.is_in = is_in.clone()
    attack.online = online
    scores = attack.finalize(values.clone(), rows.copy(), split)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64, (
        type(scores),
        getattr(scores, "dtype", None),
    )
    assert scores.shape == (len(rows),)
    np.testing.assert_allclose(scores, expected.numpy(), rtol=0, atol=SCORE_ATOL)
