import numpy as np
import pytest

from lab import metrics


def test_hand_checked_auc_accuracy_and_tpr():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    member = np.array([0, 0, 1, 1], bool)
    s = metrics.summary(scores, member)
    assert s["auc"] == pytest.approx(0.75)  # 3 of 4 member/non-member pairs ordered right
    assert s["best_acc"] == pytest.approx(0.75)  # threshold 0.8: TPR 0.5, FPR 0
    assert np.isnan(s["tpr@0.01fpr"])  # 2 non-members cannot measure a 1% FPR


def test_tpr_at_fpr_on_a_known_ranking():
    # 200 non-members scored 0..199, members 100 scored 197.5 + i: 2 non-members beat member 0.
    non = np.arange(200.0)
    mem = 197.5 + np.arange(100.0)
    scores, member = np.concatenate([non, mem]), np.r_[np.zeros(200, bool), np.ones(100, bool)]
    assert metrics.tpr_at_fpr(scores, member, 0.01) == pytest.approx(1.0)  # FPR 2/200 = 1% allowed
    assert metrics.tpr_at_fpr(scores, member, 0.005) == pytest.approx(0.99)  # 1/200: member 0 lost
    assert np.isnan(metrics.tpr_at_fpr(scores, member, 0.001))


def test_two_stage_threshold_transfer():
    rng = np.random.default_rng(0)
    n = 20000
    val = np.r_[rng.normal(1, 1, n), rng.normal(0, 1, n)]
    label = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    same = metrics.two_stage(val, label, np.r_[rng.normal(1, 1, n), rng.normal(0, 1, n)], label, 0.01)
    assert same["test_fpr"] == pytest.approx(0.01, abs=0.003)
    assert same["test_tpr"] == pytest.approx(0.092, abs=0.02)  # 1 - Phi(2.326 - 1), tail noise ~0.005
    shifted = metrics.two_stage(val, label, np.r_[rng.normal(1.5, 1, n), rng.normal(0.5, 1, n)], label, 0.01)
    assert shifted["test_fpr"] > 0.03  # a threshold from one split does not transfer to a shifted one


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    scores = np.r_[rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)]
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    auc = metrics.summary(scores, member)["auc"]
    lo, hi = metrics.bootstrap_ci(scores, member, lambda s, m: metrics.summary(s, m)["auc"], n=100)
    assert lo < auc < hi and hi - lo < 0.15


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metrics.summary(np.array([0.1, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError, match="both members and non-members"):
        metrics.summary(np.array([0.1, 0.2]), np.array([True, True]))


def test_two_stage_threshold_is_the_lowest_at_the_fpr_and_unmeasurable_fprs_are_nan():
    # 100 validation non-members scored 0..99, members 95.5..
    non, mem = np.arange(100.0), 95.5 + np.arange(10.0)
    scores, member = np.r_[non, mem], np.r_[np.zeros(100, bool), np.ones(10, bool)]
    # FPR <= 1% allows one non-member (99) at or above the threshold; the lowest such threshold is
    # member 98.5 (98 would flag two non-members: 2%)
    assert metrics.threshold_at_fpr(scores, member, 0.01) == pytest.approx(98.5)
    assert metrics.threshold_at_fpr(scores, member, 0.02) == pytest.approx(97.5)
    assert np.isnan(metrics.threshold_at_fpr(scores, member, 0.001))  # 100 non-members cannot measure 0.1%
    ts = metrics.two_stage(scores, member, scores, member, 0.001)
    assert np.isnan(ts["test_tpr"]) and np.isnan(ts["test_fpr"])
    ts = metrics.two_stage(scores, member, scores, member, 0.01)
    assert ts["test_fpr"] == pytest.approx(0.01) and ts["test_tpr"] == pytest.approx(
        0.7
    )  # members 98.5 .. 104.5 flagged


def test_bootstrap_resamples_members_and_non_members_separately():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=40)
    member = np.r_[np.ones(7, bool), np.zeros(33, bool)]
    counts = []

    def metric(s, m):
        counts.append(int(m.sum()))
        return float(s[m].mean())

    metrics.bootstrap_ci(scores, member, metric, n=200)
    assert set(counts) == {7}  # stratified: every resample keeps 7 members and 33 non-members


def test_bootstrap_interval_is_95_percent():
    """The percentile interval of a mean of n standard normals has half-width ~1.96 / sqrt(n) (1.645 at 90%)."""
    rng = np.random.default_rng(3)
    n = 400
    scores = rng.normal(size=2 * n)
    scores[:n] = (scores[:n] - scores[:n].mean()) / scores[:n].std()  # members: mean 0, sd 1 exactly
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    lo, hi = metrics.bootstrap_ci(scores, member, lambda s, m: float(s[m].mean()), n=2000)
    half = (hi - lo) / 2 * np.sqrt(n)
    assert 1.85 < half < 2.07, half


def test_fast_auc_and_tpr_equal_scikit_learn_with_ties():
    """The bootstrap's rank AUC and one-sort TPR@FPR equal scikit-learn's on its full ROC curve,
    also with many ties (RMIA's scores are fractions) and FPR targets at float edges (0.29 x 100)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(4, 300))
        is_member = rng.random(n) < rng.uniform(0.1, 0.9)
        if is_member.all() or not is_member.any():
            continue
        scores = (
            rng.integers(0, int(rng.integers(2, 30)), n).astype(float) if trial % 2 else rng.normal(size=n) + is_member
        )
        assert metrics.auc(scores, is_member) == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
        for f in (0.01, 0.05, 0.1, 0.29, 0.5, 1.0):
            if (~is_member).sum() * f < 1:
                assert np.isnan(metrics.tpr_at_fpr(scores, is_member, f))
            else:
                assert metrics.tpr_at_fpr(scores, is_member, f) == pytest.approx(tpr[fpr <= f].max(), abs=1e-12), (
                    trial,
                    f,
                )
