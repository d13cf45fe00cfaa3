"""CLiD: conditional likelihood discrepancy (Zhai et al., NeurIPS 2024, "Membership Inference on
Text-to-Image Diffusion Models via Conditional Likelihood Discrepancy"; github.com/zhaisf/CLiD).

A member's likelihood depends more on its own caption than a non-member's. With the per-caption loss

    l(c') = 1/(|T| N) sum_{t in T} sum_{k=1..N} || eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) e_tk, t, emb(c')) - e_tk ||^2 / d

(mean over the d latent entries; the same noise e_tk for every caption variant), the discrepancy
between the reduced captions c*_1..c*_K and the full caption c, and the plain loss:

    D(x) = 1/K sum_j ( l(c*_j) - l(c) ),    score(x) = alpha * D(x) + (1 - alpha) * (-l(c))

Higher = member. The reductions are the authors' "simple clipping" (mia_CLiD_clip.py): the first,
middle and last third of the caption's characters, plus the empty caption "" (K = 4;
`reductions: null` keeps only ""). Their default, importance clipping, needs word weights from an
external model (PromptCharm); in their Table D.1 simple clipping is within 0.2 AUC of it.
Defaults as the paper: t in {440, 450, 460}, one noise per timestep (3 + 4 x 3 = 15 denoiser calls).
CLiD_th standardises D and L with a robust scaler fit on a shadow model and picks alpha there;
here the raw terms are used and alpha = 1 (the discrepancy alone), which ranks examples exactly as
CLiD_th at alpha = 1 (a robust scaler is monotone). Draw i*N + k of the example's seeded noise is
e_{t_i, k}. The attack always uses the caption and its reductions, whatever `condition` says.

The paper's two combinations, learned on the validation split (in place of the shadow model) with
`LearnedAttack`'s cross-fitting, on the features V = [-l(c), D_1, ..., D_K]:

    clid_th:  alpha * S(D) + (1 - alpha) * S(-l(c)),  S = a robust scaler (median, IQR; sklearn's
              RobustScaler, as cal_clid_th.py), alpha in {0, 0.1, ..., 1} with the best fit-set AUC
    clid_vec: a gradient-boosted tree classifier on V (cal_clid_xgb.py: XGBoost with 20 trees, depth
              3, subsample 0.7, colsample 0.7, L2 1; here scikit-learn's GradientBoostingClassifier
              with those settings and XGBoost's learning rate 0.3, without XGBoost's gamma and L1 terms)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import RobustScaler

from lab.attacks.base import Attack, LearnedAttack
from lab.attacks.loss import check_range
from lab.errors import LabError, check_number

REDUCTIONS = ("thirds", "null")
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def reduced_captions(caption: str, reductions: str) -> list[str]:
    """c*_1..c*_K of one caption: its character thirds and "" ('thirds'), or "" alone ('null')."""
    if reductions == "null":
        return [""]
    n = len(caption)
    return [caption[: n // 3], caption[n // 3 : 2 * n // 3], caption[2 * n // 3 :], ""]


class _Likelihoods:
    """What the three CLiD attacks share: the settings and the terms [-l(c), D_1, ..., D_K]."""

    uses_condition = False  # always the caption and its reductions

    def _settings(self, timesteps, num_noise, reductions) -> None:
        if reductions not in REDUCTIONS:
            raise LabError(f"clid: reductions must be one of {', '.join(REDUCTIONS)}, got {reductions!r}")
        check_number("clid: num_noise", num_noise, minimum=1, integer=True)
        self.timesteps, self.num_noise, self.reductions = [int(t) for t in timesteps], int(num_noise), reductions
        if not self.timesteps:
            raise LabError("clid needs at least one timestep")

    def bind(self, target, condition: str = "caption"):
        if not target.conditional:
            raise LabError(f"{type(self).__name__.lower()} needs a text-to-image target (a StableDiffusionPipeline): it compares losses under different captions")
        return super().bind(target, condition)

    def check_timesteps(self) -> None:
        check_range("clid", self.timesteps, self.num_train_timesteps)

    def loss(self, x0: torch.Tensor, draws: list[torch.Tensor], context: torch.Tensor) -> torch.Tensor:
        """l(c') per example for prompt embeddings `context`, over every (timestep, draw)."""
        out = torch.zeros(x0.shape[0], device=x0.device)
        with self.conditioned_on(context):
            for i, t in enumerate(self.timesteps):
                for k in range(self.num_noise):
                    noise = draws[i * self.num_noise + k]
                    out += (self.eps(self.q_sample(x0, t, noise), t) - noise).pow(2).flatten(1).mean(1)
        return out / (len(self.timesteps) * self.num_noise)

    def terms(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K): -l(c), then l(c*_j) - l(c) for each reduction j."""
        if self.batch_captions is None:
            raise LabError("clid: the examples have no captions")
        draws = [self.noise(x0, rows, draw=d) for d in range(len(self.timesteps) * self.num_noise)]
        full = self.loss(x0, draws, self.embed(self.batch_captions))
        variants = zip(*[reduced_captions(c, self.reductions) for c in self.batch_captions])  # c*_j of every example
        gaps = [self.loss(x0, draws, self.embed(list(v))) - full for v in variants]
        return torch.stack([-full, *gaps], 1)


class CLiD(_Likelihoods, Attack):
    """The threshold score alpha * D + (1 - alpha) * (-l(c)) on the raw terms (alpha = 1: D alone)."""

    def __init__(self, timesteps: list[int] = (440, 450, 460), num_noise: int = 1, reductions: str = "thirds", alpha: float = 1.0, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions)
        check_number("clid: alpha", alpha, minimum=0)
        if alpha > 1:
            raise LabError(f"clid: alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def score(self, x0, rows):
        v = self.terms(x0, rows)
        return self.alpha * v[:, 1:].mean(1) + (1 - self.alpha) * v[:, 0]


class CLiDTh(_Likelihoods, LearnedAttack):
    """CLiD_th: robust-scaled D and -l(c), mixed with the alpha of the best fit-set AUC."""

    def __init__(self, timesteps: list[int] = (440, 450, 460), num_noise: int = 1, reductions: str = "thirds", seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions)

    def features(self, x0, rows):
        return self.terms(x0, rows)

    @staticmethod
    def pair(features: torch.Tensor) -> np.ndarray:
        """(N, 2): [D (the mean over reductions), -l(c)]."""
        v = features.double().numpy()
        return np.stack([v[:, 1:].mean(1), v[:, 0]], 1)

    def fit(self, features, is_member):
        pair = self.pair(features)
        self.scaler = RobustScaler().fit(pair)
        scaled, y = self.scaler.transform(pair), is_member.numpy()
        aucs = [roc_auc_score(y, a * scaled[:, 0] + (1 - a) * scaled[:, 1]) for a in ALPHAS]
        self.alpha = ALPHAS[int(np.argmax(aucs))]  # the first best, as cal_clid_th.py

    def decision(self, features):
        scaled = self.scaler.transform(self.pair(features))
        return torch.from_numpy(self.alpha * scaled[:, 0] + (1 - self.alpha) * scaled[:, 1])


class CLiDVec(_Likelihoods, LearnedAttack):
    """CLiD_vec: gradient-boosted trees on [-l(c), D_1, ..., D_K]."""

    def __init__(self, timesteps: list[int] = (440, 450, 460), num_noise: int = 1, reductions: str = "thirds", trees: int = 20, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions)
        check_number("clid_vec: trees", trees, minimum=1, integer=True)

    def features(self, x0, rows):
        return self.terms(x0, rows)

    def fit(self, features, is_member):
        self.classifier = GradientBoostingClassifier(
            n_estimators=self.hparams.trees, max_depth=3, learning_rate=0.3, subsample=0.7, max_features=0.7, random_state=self.seed,
        )
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features):
        return torch.from_numpy(self.classifier.predict_proba(features.double().numpy())[:, 1])
