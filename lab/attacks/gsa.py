"""GSA1 / GSA2: gradient-substitution attacks (Pang et al. 2023; in copymark-2410.03640).

White-box: the per-layer gradient norms of the diffusion loss are the membership features.
With timesteps T = {99, 199, ..., 999} (as in py85252876/GSA) and one seeded noise e_t each,

    L_t(x)  = || eps_theta(sqrt(abar_t) x + sqrt(1 - abar_t) e_t, t) - e_t ||^2
    GSA1(x) = [ || d/d theta_l  1/|T| sum_t L_t(x) ||_2 ]_l            one backward per example
    GSA2(x) = [ 1/|T| sum_t || d/d theta_l  L_t(x) ||_2 ]_l            one backward per timestep

one norm per parameter tensor theta_l. A gradient-boosted classifier is fit on the validation
split's features and scores the test split (never the same data). The authors use
`XGBClassifier(n_estimators=200)` (py85252876/GSA); here scikit-learn's histogram boosting with
XGBoost's defaults where they matter: 200 trees, learning rate 0.3, depth 6, L2 1, and leaves of
a single example (XGBoost's minimum child weight 1; scikit-learn's default of 20 examples a leaf
leaves a 36-row validation split with a constant classifier and a test AUC of exactly 0.5).
Cost: |T| denoiser calls (one batched forward) and 1 (GSA1) or |T| (GSA2) backward passes per example.
"""

from __future__ import annotations

import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from lab.attacks.base import LearnedAttack
from lab.errors import LabError


class _GSA(LearnedAttack):
    needs_grad = True
    per_timestep_backward = False

    def __init__(
        self,
        timesteps: list[int] = tuple(range(99, 1000, 100)),
        trees: int = 200,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        self.save_hyperparameters({"timesteps": list(timesteps), "trees": trees, "objective": objective, "seed": seed})
        self.set_objective(objective)
        self.timesteps = [int(t) for t in timesteps]
        if not self.timesteps or trees < 1:
            raise LabError(f"{type(self).__name__.lower()} needs timesteps and trees >= 1")
        self.classifier = None

    def check_timesteps(self) -> None:
        self.check_range(self.timesteps)

    def cost(self) -> tuple[int, int]:
        return len(self.timesteps), len(self.timesteps) if self.per_timestep_backward else 1

    def features(self, x0, rows):
        params = [p for p in self.unet.parameters()]
        noises = [self.noise(x0, rows, draw=j) for j in range(len(self.timesteps))]
        t = torch.tensor(self.timesteps, device=x0.device)
        out = []
        for i in range(x0.shape[0]):
            noise = torch.stack([n[i] for n in noises])  # (|T|, C, H, W)
            with torch.enable_grad(), self.example(i):
                for p in params:
                    p.requires_grad_(True)
                a = self.abar(t).view(-1, 1, 1, 1)
                x_t = a.sqrt() * x0[i : i + 1] + (1 - a).sqrt() * noise
                losses = (
                    self.error(x_t, t, x0[i : i + 1], noise).pow(2).flatten(1).mean(1)
                )  # |T| calls for this example
                if self.per_timestep_backward:
                    norms = torch.zeros(len(params), device=x0.device)
                    for j in range(len(self.timesteps)):
                        grads = self.grad(losses[j], params, retain_graph=j + 1 < len(self.timesteps))
                        norms += torch.stack([g.norm() for g in grads]) / len(self.timesteps)
                else:
                    norms = torch.stack([g.norm() for g in self.grad(losses.mean(), params)])
                for p in params:
                    p.requires_grad_(False)
            out.append(norms.detach())
        return torch.stack(out)

    def fit(self, features, is_member):
        self.classifier = HistGradientBoostingClassifier(
            max_iter=self.hparams.trees,
            learning_rate=0.3,
            max_depth=6,
            max_leaf_nodes=None,
            min_samples_leaf=1,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=self.seed,
        )
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features):
        return torch.from_numpy(self.classifier.predict_proba(features.double().numpy())[:, 1])


class GSA1(_GSA):
    """Gradient of the loss averaged over timesteps: one backward per example."""


class GSA2(_GSA):
    """Gradient norms per timestep, averaged: |T| backward passes per example."""

    per_timestep_backward = True
