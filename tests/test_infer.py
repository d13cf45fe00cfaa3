"""Dataset inference (`lab.dataset_inference`, `python -m lab.infer`): the test's false-positive
rate and power on synthetic features, the CLI on a target's own split and on image folders, and
bad input as one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from lab import dataset_inference as di
from lab.errors import LabError
from lab.infer import main


def null_rejections(test, repeats=400, n=60, f=8, alpha=0.05):
    rng = np.random.default_rng(1)
    return sum(
        test(rng.normal(size=(n, f)), rng.normal(size=(2 * n, f)), int(rng.integers(1 << 30))) < alpha
        for _ in range(repeats)
    )


def test_false_positive_rate_stays_at_alpha_and_a_leaky_scorer_is_caught():
    """Owner and held-out sets from one distribution: p < 0.05 in at most 5% + the binomial margin
    of 400 repeats. Fitting the scorer on the test halves too (a plausible mistake) inflates it."""
    rate = null_rejections(lambda o, h, s: di.cdi_test(o, h, s).p_value) / 400
    assert rate <= 0.05 + 1.645 * np.sqrt(0.05 * 0.95 / 400)

    def leaky(o, h, s):
        from sklearn.linear_model import LogisticRegression

        x, y = np.concatenate([o, h]), np.r_[np.ones(len(o)), np.zeros(len(h))]
        p = LogisticRegression().fit(x, y).predict_proba(x)[:, 1]
        return stats.ttest_ind(p[: len(o)], p[len(o) :], equal_var=False, alternative="greater").pvalue

    assert null_rejections(leaky) / 400 > 0.15


def test_a_small_shift_in_many_examples_is_detected_where_one_example_is_not():
    rng = np.random.default_rng(0)
    owner, heldout = rng.normal(0.3, 1, size=(400, 2)), rng.normal(0, 1, size=(400, 2))
    member_auc = stats.mannwhitneyu(owner[:, 0], heldout[:, 0]).statistic / 400**2
    assert member_auc < 0.62  # a weak per-example attack
    result = di.cdi_test(owner, heldout, seed=0)
    assert result.p_value < 0.01 and result.owner_test == 200 and result.heldout_test == 200
    needed = di.examples_needed(owner, heldout, alpha=0.01, repeats=5)
    assert needed is not None and 16 <= needed <= 400
    # the p-value is Welch's one-sided t-test (H1: the owner's half scores higher), recomputed by hand
    a, b = result.owner_scores, result.heldout_scores
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert result.t_statistic == pytest.approx(t) and result.p_value == pytest.approx(stats.t.sf(t, df))
    assert np.all((0 <= a) & (a <= 1)) and a.mean() > b.mean()


def test_simulation_on_known_membership():
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(1.0, 1, size=(40, 2)), rng.normal(0, 1, size=(160, 2))]
    is_member = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    power = di.simulate(features, is_member, "members", 40, 80, repeats=20, alpha=0.05)
    assert power.rate >= 0.9
    fpr = di.simulate(features, is_member, "nonmembers", 40, 120, repeats=100, alpha=0.05)
    assert fpr.rate <= fpr.margin() and fpr.interval()[0] <= 0.05 <= fpr.interval()[1] + 0.05
    with pytest.raises(LabError, match="too few"):
        di.simulate(features, is_member, "members", 41, 80)
    with pytest.raises(LabError, match="at least 4"):
        di.cdi_test(features[:3], features[3:])
    with pytest.raises(LabError, match="NaN"):
        di.cdi_test(np.full((8, 2), np.nan), features)


@pytest.mark.slow
def test_cli_simulates_on_the_targets_own_split(overfit_target, tmp_path, capsys):
    """On the over-fitted target, owner sets of members are found every time; sets of non-members
    are not, beyond the test's level."""
    out = tmp_path / "members"
    main(
        [
            "--target",
            str(overfit_target),
            "--simulate",
            "members",
            "--owner_size",
            "8",
            "--repeats",
            "20",
            "--attacks",
            "[loss, sima]",
            "--out",
            str(out),
        ]
    )
    power = json.loads((out / "inference.json").read_text())
    assert power["rejection_rate"] == 1.0 and power["owner_size"] == 8 and power["heldout_size"] == 16
    assert "power" in capsys.readouterr().out
    main(
        [
            "--target",
            str(overfit_target),
            "--simulate",
            "nonmembers",
            "--owner_size",
            "12",
            "--repeats",
            "40",
            "--attacks",
            "[loss, sima]",
            "--out",
            str(tmp_path / "non"),
        ]
    )
    fpr = json.loads((tmp_path / "non" / "inference.json").read_text())
    assert fpr["heldout_size"] == 36 and fpr["rejection_rate"] <= fpr["valid_fpr_at_most"]
    assert "valid test: yes" in capsys.readouterr().out
    features = (out / "features.csv").read_text().splitlines()
    assert features[0] == "id,set,loss,sima" and len(features) == 1 + 64


def test_cli_on_owner_and_heldout_folders(tmp_path, capsys):
    from test_latent import image_folder, save_pipeline

    target = save_pipeline("ddpm", tmp_path / "ddpm")
    owner, heldout = image_folder(tmp_path / "owner", 8, 0), image_folder(tmp_path / "heldout", 8, 1)
    main(
        [
            "--target",
            str(target),
            "--owner",
            str(owner),
            "--heldout",
            str(heldout),
            "--attacks",
            "[loss]",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    result = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert result["owner"] == 8 and result["heldout"] == 8 and 0 <= result["p_value"] <= 1
    assert result["verdict"] in ("used", "not shown")
    assert "owner examples vs 8 held-out" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_errors_are_one_line_before_anything_is_written(overfit_target, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--target", str(overfit_target), "--out", str(out)]
    cases = [
        (["--simulate", "members", "--owner", str(tmp_path)], "give either --owner DIR --heldout DIR"),
        ([], "give either --owner DIR --heldout DIR"),
        (["--owner", str(tmp_path)], "give both --owner DIR and --heldout DIR"),
        (["--simulate", "members", "--attacks", "[secmi_nn]"], "needs no labelled members; not secmi_nn"),
        (["--simulate", "members", "--alpha", "1.5"], "--alpha must be > 0.0 and < 1.0"),
        (["--simulate", "members", "--owner_size", "99"], "too few"),
        (["--simulate", "everyone"], "--simulate takes members or nonmembers"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            main(base + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lab.infer: error:") and message in err[0], err
        assert not (out / "inference.json").exists()
