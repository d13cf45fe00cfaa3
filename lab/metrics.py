"""Membership-inference metrics from raw scores (higher = member), with scikit-learn.

scikit-learn's ROC functions work on raw scores; torchmetrics' binary ROC/AUROC squash scores
outside [0, 1] through a sigmoid, which changes nothing for AUC in theory but saturates in
float32 and ties distinct scores (seen here: AUC 0.5 instead of 0.75), so it is not used.

- AUC; TPR at 0.1% / 1% / 5% FPR (the largest TPR whose FPR <= the target, on the ROC curve);
  NaN where there are too few non-members for that FPR (the smallest FPR is 1 / N).
- best accuracy: max over thresholds of the balanced accuracy 1 - (FPR + FNR) / 2.
- two-stage (copymark-2410.03640): pick the threshold on validation at FPR <= alpha, apply it
  to test, report the TPR and the FPR test actually gets. NaN where validation has fewer than
  1 / alpha non-members: a 0.1% FPR cannot be picked on 100 non-members (it would really be the
  zero-FPR threshold).
- bootstrap: 95% percentile intervals from resampling members and non-members separately
  (stratified: every resample keeps the split's member / non-member counts).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

FPRS = (0.001, 0.01, 0.05)


def _check(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D and of the same length")
    if is_member.all() or not is_member.any():
        raise ValueError("metrics need both members and non-members")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores, is_member


def tpr_at_fpr(scores, is_member, fpr_target: float) -> float:
    """The largest TPR over thresholds whose FPR <= fpr_target: flag every example scoring above the
    (k+1)-th highest non-member score, k the most non-members the target FPR allows. The same value
    as the maximum over scikit-learn's full ROC curve (`drop_intermediate=False`; with dropped
    collinear points a tie of members and non-members can hide the best threshold), in one sort:
    the bootstrap calls it thousands of times."""
    scores, is_member = _check(scores, is_member)
    neg = np.sort(scores[~is_member])[::-1]
    n_neg = len(neg)
    if n_neg * fpr_target < 1:
        return float("nan")  # FPR this low cannot be measured with so few non-members
    k = _allowed(n_neg, fpr_target)
    if k >= n_neg:
        return 1.0
    return float((scores[is_member] > neg[k]).mean())


def _allowed(n_neg: int, fpr_target: float) -> int:
    """The most false positives k with k / n_neg <= fpr_target, by the same float comparison as an ROC curve."""
    k = int(np.floor(fpr_target * n_neg))
    while k + 1 <= n_neg and (k + 1) / n_neg <= fpr_target:
        k += 1
    while k > 0 and k / n_neg > fpr_target:
        k -= 1
    return k


def best_accuracy(scores, is_member) -> float:
    scores, is_member = _check(scores, is_member)
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return float(np.max(1 - (fpr + (1 - tpr)) / 2))


def auc(scores, is_member) -> float:
    """Area under the ROC curve, as the Mann-Whitney statistic with average ranks for ties (equal
    to scikit-learn's `roc_auc_score`, about 50x faster: what the bootstrap resamples)."""
    scores, is_member = _check(scores, is_member)
    n_pos = int(is_member.sum())
    n_neg = len(scores) - n_pos
    ranks = rankdata(scores)
    return float((ranks[is_member].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summary(scores, is_member) -> dict[str, float]:
    scores, is_member = _check(scores, is_member)
    out = {"auc": auc(scores, is_member), "best_acc": best_accuracy(scores, is_member)}
    for f in FPRS:
        out[f"tpr@{f:g}fpr"] = tpr_at_fpr(scores, is_member, f)
    return out


def threshold_at_fpr(scores, is_member, fpr_target: float) -> float:
    """The lowest threshold (the one that flags the most examples) whose FPR stays <= fpr_target,
    an example being flagged a member when score >= threshold: the score of the last point of the
    ROC curve at or below that FPR. NaN where fewer than 1 / fpr_target non-members cannot measure it."""
    scores, is_member = _check(scores, is_member)
    if (~is_member).sum() * fpr_target < 1:
        return float("nan")
    fpr, _, thresholds = roc_curve(is_member, scores, drop_intermediate=False)
    return float(thresholds[fpr <= fpr_target].min())


def two_stage(val_scores, val_member, test_scores, test_member, fpr_target: float) -> dict[str, float]:
    """Threshold picked on validation at FPR <= fpr_target, applied to test: the TPR and FPR test gets."""
    thr = threshold_at_fpr(val_scores, val_member, fpr_target)
    test_scores, test_member = _check(test_scores, test_member)
    if np.isnan(thr):
        return {"threshold": thr, "test_tpr": float("nan"), "test_fpr": float("nan")}
    predicted = test_scores >= thr
    return {
        "threshold": thr,
        "test_tpr": float(predicted[test_member].mean()),
        "test_fpr": float(predicted[~test_member].mean()),
    }


def bootstrap_ci(scores, is_member, metric, n: int = 200, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `metric(scores, is_member)` over stratified resamples."""
    scores, is_member = _check(scores, is_member)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    values = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(metric(scores[idx], is_member[idx]))
    values = np.asarray(values)
    if np.isnan(values).all():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
