"""Dataset inference: was a data owner's *collection* used to train a target? (CDI recipe)

Dubinski et al., "CDI: Copyrighted Data Identification in Diffusion Models" (CVPR 2025; authors'
code unknowndi/dataset_inference_diffusion_models). Per-example MIAs are weak on real models, but
an owner holds many examples, and a small shift in the mean score over many is detectable:

1. Features: each owner example P and each held-out example U (known to be outside training, from
   the same distribution) gets the scores of several MIAs (one column per attack).
2. Each set is halved at random into control and test. A scoring model (standardised features,
   logistic regression, as the authors) is fit on the control halves: P_ctrl labelled 1, U_ctrl 0.
3. One-sided Welch t-test on the scoring model's outputs for the test halves, H1: mean s(P_test) >
   mean s(U_test). p < alpha: "used"; otherwise "not shown" (absence of evidence, not of use).

Under H0 (P from the same distribution as U and not trained on), the model is fit on data
independent of the test halves, so the test's false-positive rate is at most alpha (up to the
t approximation); `simulate` measures it on a target's own split. The authors take the two-sided
Welch p-value and check the sign; the one-sided p-value here is the same test at alpha/2 per side.
Scores that cannot be compared (constant on both test halves) give p = 1.
The held-out set must come from the owner's distribution: the scoring model learns whichever way
the two sets differ, so a shifted held-out set makes any owner set look "used" (dataset shift,
the pitfall the lab measures in per-example MIAs, applies here with full force).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from lab.errors import LabError

MIN_TEST = 2  # examples per side in each test half: a Welch t-test needs two


@dataclasses.dataclass
class InferenceResult:
    p_value: float
    t_statistic: float
    owner_scores: np.ndarray  # the scoring model's outputs on the owner's test half
    heldout_scores: np.ndarray  # ... and on the held-out test half

    @property
    def owner_test(self) -> int:
        return len(self.owner_scores)

    @property
    def heldout_test(self) -> int:
        return len(self.heldout_scores)


def cdi_test(owner: np.ndarray, heldout: np.ndarray, seed: int = 0) -> InferenceResult:
    """The CDI test on feature matrices (n_owner, f) and (n_heldout, f)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    owner, heldout = _features(owner, "owner"), _features(heldout, "held-out")
    if owner.shape[1] != heldout.shape[1]:
        raise LabError(f"owner and held-out examples have {owner.shape[1]} and {heldout.shape[1]} features")
    rng = np.random.default_rng(seed)
    o_ctrl, o_test = _halves(len(owner), rng)
    h_ctrl, h_test = _halves(len(heldout), rng)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(np.concatenate([owner[o_ctrl], heldout[h_ctrl]]), np.r_[np.ones(len(o_ctrl)), np.zeros(len(h_ctrl))])
    s_owner, s_heldout = model.predict_proba(owner[o_test])[:, 1], model.predict_proba(heldout[h_test])[:, 1]
    result = stats.ttest_ind(s_owner, s_heldout, equal_var=False, alternative="greater")
    p, t = float(result.pvalue), float(result.statistic)
    if not np.isfinite(p):  # no spread at all: nothing shown
        p, t = 1.0, 0.0
    return InferenceResult(p, t, s_owner, s_heldout)


def examples_needed(
    owner: np.ndarray, heldout: np.ndarray, alpha: float, repeats: int = 20, seed: int = 0
) -> int | None:
    """The smallest owner-set size (on a doubling grid up to all of them) whose median p-value over
    `repeats` random subsets is below alpha; None if even all of them are not enough."""
    n = len(owner)
    sizes = sorted({s for s in (2 ** np.arange(3, 20)).tolist() if s < n} | {n})
    rng = np.random.default_rng(seed)
    for size in sizes:
        ps = [
            cdi_test(owner[rng.choice(n, size, replace=False)], heldout, seed=int(rng.integers(2**31))).p_value
            for _ in range(repeats)
        ]
        if float(np.median(ps)) < alpha:
            return size
    return None


@dataclasses.dataclass
class Simulation:
    owner_from: str
    owner_size: int
    heldout_size: int
    alpha: float
    p_values: list[float]

    @property
    def rejections(self) -> int:
        return int(sum(p < self.alpha for p in self.p_values))

    @property
    def rate(self) -> float:
        return self.rejections / len(self.p_values)

    def interval(self) -> tuple[float, float]:
        """95% Clopper-Pearson interval of the rejection rate."""
        ci = stats.binomtest(self.rejections, len(self.p_values)).proportion_ci(0.95, method="exact")
        return float(ci.low), float(ci.high)

    def margin(self) -> float:
        """alpha + the one-sided 95% binomial margin: the most a valid test's false-positive rate may read."""
        return self.alpha + 1.645 * float(np.sqrt(self.alpha * (1 - self.alpha) / len(self.p_values)))


def simulate(
    features: np.ndarray,
    is_member: np.ndarray,
    owner_from: str,
    owner_size: int,
    heldout_size: int,
    repeats: int = 100,
    alpha: float = 0.05,
    seed: int = 0,
) -> Simulation:
    """Validate the test on a target whose membership is known: `repeats` owner sets of `owner_size`
    drawn from its members (power) or non-members (false-positive rate), each against `heldout_size`
    other non-members."""
    members, nonmembers = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    check_sizes(len(members), len(nonmembers), owner_from, owner_size, heldout_size)
    pool = members if owner_from == "members" else nonmembers
    rng = np.random.default_rng(seed)
    ps = []
    for _ in range(repeats):
        owner = rng.choice(pool, owner_size, replace=False)
        rest = np.setdiff1d(nonmembers, owner)
        heldout = rng.choice(rest, heldout_size, replace=False)
        ps.append(cdi_test(features[owner], features[heldout], seed=int(rng.integers(2**31))).p_value)
    return Simulation(owner_from, owner_size, heldout_size, alpha, ps)


def check_attacks(attacks: dict) -> None:
    """A LabError for attacks whose score is a classifier fit on labelled members: the owner has no labels."""
    if learned := [k for k, a in attacks.items() if a.learned]:
        raise LabError(
            f"dataset inference takes attacks whose score needs no labelled members; not {', '.join(learned)}"
        )


def score_features(target, attacks: dict, batch_size: int = 64, trainer_kwargs: dict | None = None):
    """Every example of the target's split scored by each attack: (ids, is_member, features (N, attacks)).
    Attacks whose score is a classifier fit on labelled members are refused: the owner has no labels."""
    from lab.scoring import score_target

    check_attacks(attacks)
    table = score_target(target, attacks, batch_size, trainer_kwargs)
    wide = table.pivot(index="id", columns="attack", values="score").loc[target.split.ids, list(attacks)]
    is_member = np.array([r == "member" for r in target.split.roles])
    return list(wide.index), is_member, wide.to_numpy(dtype=np.float64)


def simulation_sizes(
    members: int, nonmembers: int, owner_from: str, owner_size: int | None, heldout_size: int | None
) -> tuple[int, int]:
    """Owner and held-out set sizes for `simulate` (defaults: all members against twice as many
    non-members; or a third of the non-members against the rest), checked against the split."""
    if owner_size is None:
        owner_size = members if owner_from == "members" else nonmembers // 3
    if heldout_size is None:
        heldout_size = min(nonmembers, 2 * owner_size) if owner_from == "members" else nonmembers - owner_size
    check_sizes(members, nonmembers, owner_from, owner_size, heldout_size)
    return owner_size, heldout_size


def check_sizes(members: int, nonmembers: int, owner_from: str, owner_size: int, heldout_size: int) -> None:
    if owner_from not in ("members", "nonmembers"):
        raise LabError(f"owner sets are drawn from members or nonmembers, got {owner_from!r}")
    for name, v in (("owner set", owner_size), ("held-out set", heldout_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2 * MIN_TEST:
            raise LabError(
                f"the {name} needs at least {2 * MIN_TEST} examples (half are held back for the test), got {v!r}"
            )
    pool = members if owner_from == "members" else nonmembers
    if owner_size > pool or heldout_size + (owner_size if owner_from == "nonmembers" else 0) > nonmembers:
        raise LabError(
            f"the split has {members} members and {nonmembers} non-members: too few for owner sets of "
            f"{owner_size} from {owner_from} and {heldout_size} held-out non-members"
        )


def _features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) < 2 * MIN_TEST:
        raise LabError(
            f"dataset inference needs at least {2 * MIN_TEST} {what} examples "
            f"(half are held back for the test), got {len(x)}"
        )
    if not np.isfinite(x).all():
        raise LabError(f"the {what} examples have NaN or infinite attack scores")
    return x


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]
