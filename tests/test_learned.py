"""Learned attacks: cross-fitting (out-of-fold validation, test from the same fold models), and
classifiers that fit what they are given."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lab.attacks import ATTACKS, LearnedAttack
from lab.data import MembershipSplit


def make_split(n_val: int = 10, n_test: int = 6) -> MembershipSplit:
    """Members and non-members, each side n_val validation + n_test test rows."""
    ids, roles, splits = [], [], []
    for role in ("member", "nonmember"):
        for i in range(n_val + n_test):
            ids.append(f"{role}:{i}")
            roles.append(role)
            splits.append("validation" if i < n_val else "test")
    return MembershipSplit(ids=ids, roles=roles, eval_splits=splits, seed=0)


class Memoriser(LearnedAttack):
    """Remembers each training row's label: +10 member, -10 non-member, 0 for rows it never saw; counts fits."""

    def __init__(self):
        super().__init__(seed=0)
        self.fits = []

    def fit(self, features, is_member):
        self.fits.append(features[:, 0].tolist())
        self.seen = {float(f): (10.0 if m else -10.0) for f, m in zip(features[:, 0], is_member)}

    def decision(self, features):
        return torch.tensor([self.seen.get(float(f), 0.0) for f in features[:, 0]]) + len(self.fits)


def test_validation_scores_are_out_of_fold_and_test_scores_average_the_same_fold_models():
    split = make_split()
    rows = np.random.default_rng(0).permutation(len(split.ids))  # any order
    values = torch.tensor(rows, dtype=torch.float64).view(-1, 1)  # feature = the row itself
    attack = Memoriser()
    scores = attack.finalize(values, rows, split)
    val = np.array([split.eval_splits[r] == "validation" for r in rows])
    member = np.array([split.roles[r] == "member" for r in rows])
    # every validation row was scored by a model that never saw it: only the fold offset remains
    assert len(attack.fits) == LearnedAttack.FOLDS
    for r, s in zip(rows[val], scores[val]):
        fold = next(i for i, f in enumerate(attack.fits, 1) if float(r) not in f)
        assert s == fold
    assert roc_auc_score(member[val], scores[val]) < 0.8  # in-fold scores would give 1.0 here
    # test rows: the mean of the very same fold models' scores (1 + ... + 5) / 5, no extra refit
    np.testing.assert_allclose(scores[~val], np.mean(np.arange(1, LearnedAttack.FOLDS + 1)))


def test_cross_fitting_needs_two_of_each_side():
    split = MembershipSplit(
        ids=["a", "b", "c", "d"],
        roles=["member", "nonmember", "nonmember", "member"],
        eval_splits=["validation", "validation", "validation", "test"],
        seed=0,
    )
    from lab.errors import LabError

    with pytest.raises(LabError, match="at least 2 members and 2 non-members"):
        Memoriser().finalize(torch.zeros(4, 1), np.arange(4), split)


def separable(shape, n=18, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, *shape)).astype(np.float32)
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return torch.from_numpy(x), torch.from_numpy(y), rng


@pytest.mark.parametrize("name", ["gsa1", "gsa2", "pfami_nn", "blind"])
def test_tabular_classifiers_fit_separable_features_and_follow_their_labels(name):
    x, y, rng = separable((20,))
    x[y, :5] += 2.0
    attack = ATTACKS[name]()
    attack.fit(x, y)
    before = attack.decision(x).numpy()
    assert roc_auc_score(y, before) > 0.99
    shuffled = torch.from_numpy(rng.permutation(y.numpy()))
    attack.fit(x, shuffled)
    after = attack.decision(x).numpy()
    assert np.ptp(after) > 0 and not np.allclose(before, after)  # not a constant, not blind to the labels
    assert roc_auc_score(shuffled, after) > 0.6  # it follows whatever labels it is given


def test_secmi_nn_classifier_fits_separable_error_maps():
    x, y, _ = separable((1, 16, 16))
    x = x.abs()
    x[y, :, 4:10, 4:10] += 1.0
    attack = ATTACKS["secmi_nn"]()
    attack.fit(x, y)
    assert roc_auc_score(y, attack.decision(x)) > 0.99


@pytest.mark.parametrize("k", [2, 4, 8])
def test_lira_references_train_on_as_many_examples_as_the_target(k):
    """Carlini et al. match the references' training-set size to the target's; every example is in
    as many references as the draw allows (floor or ceil of K x members / pool)."""
    from lab.attacks.lira import reference_splits

    split = make_split(n_val=10, n_test=6)  # 16 members, 16 non-members: a pool of 32
    split.roles = ["member"] * 6 + ["nonmember"] * 26  # a target trained on 6 of the 32
    refs = reference_splits(split, k, seed=0)
    assert [r.roles.count("member") for r in refs] == [6] * k
    ins = np.array([[r.roles[i] == "member" for r in refs] for i in range(32)]).sum(1)
    assert ins.min() == (k * 6) // 32 and ins.max() == -(-(k * 6) // 32)
    assert all(r.ids == split.ids and r.eval_splits == split.eval_splits for r in refs)
