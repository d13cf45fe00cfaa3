"""Blind baseline: membership "inferred" from the images alone (copymark-2410.03640).

    score(x) = P(member | pixels of x),   a classifier fit on the validation split only

It never calls the target (0 denoiser calls). On splits drawn from one source it should sit
near AUC 0.5; when non-members come from another distribution it separates them anyway, which
is the part of any attack's "success" that is dataset shift, not membership. CopyMark's blind
classifier reached AUC 0.998 on CelebA-HQ vs FFHQ and 0.55 on same-source splits. Here the
classifier is a standardised, L2-regularised logistic regression on pixels (scikit-learn).
"""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lab.attacks.base import LearnedAttack


class Blind(LearnedAttack):
    """Args: C: inverse L2 strength of the logistic regression; seed: its solver's seed."""

    pixel_input = True
    uses_condition = False

    def __init__(self, C: float = 0.01, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self.classifier = None

    def bind(self, target, condition: str = "caption") -> "Blind":
        """Keep nothing of the target: the baseline must not see the model."""
        self.unet = None
        return self

    def cost(self) -> tuple[int, int]:
        return 0, 0  # never calls the target

    def features(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return x0.flatten(1)

    def fit(self, features: torch.Tensor, is_member: torch.Tensor) -> None:
        self.classifier = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.hparams.C, max_iter=2000, random_state=self.seed)
        )
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.classifier.decision_function(features.double().numpy()))
