"""CLiD_th and CLiD_vec (Zhai et al., NeurIPS 2024; github.com/zhaisf/CLiD): the paper's two
combinations of the CLiD terms (`lab.attacks.clid`), learned on the validation split (in place
of the shadow model) with `LearnedAttack`'s cross-fitting, on the features V = [-l(c), D_1, ..., D_K]:

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

from lab.attacks.base import LearnedAttack
from lab.attacks.clid import CaptionLosses
from lab.errors import check_number

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


class CLiDTh(CaptionLosses, LearnedAttack):
    """CLiD_th: robust-scaled D and -l(c), mixed with the alpha of the best fit-set AUC."""

    def __init__(
        self,
        timesteps: list[int] = (440, 450, 460),
        num_noise: int = 1,
        reductions: str = "thirds",
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions, objective)

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


class CLiDVec(CaptionLosses, LearnedAttack):
    """CLiD_vec: gradient-boosted trees on [-l(c), D_1, ..., D_K]."""

    def __init__(
        self,
        timesteps: list[int] = (440, 450, 460),
        num_noise: int = 1,
        reductions: str = "thirds",
        trees: int = 20,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions, objective)
        check_number("clid_vec: trees", trees, minimum=1, integer=True)

    def features(self, x0, rows):
        return self.terms(x0, rows)

    def fit(self, features, is_member):
        self.classifier = GradientBoostingClassifier(
            n_estimators=self.hparams.trees,
            max_depth=3,
            learning_rate=0.3,
            subsample=0.7,
            max_features=0.7,
            random_state=self.seed,
        )
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features):
        return torch.from_numpy(self.classifier.predict_proba(features.double().numpy())[:, 1])
