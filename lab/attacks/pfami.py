"""PFAMI: probabilistic-fluctuation membership inference (Fu et al. 2023; in copymark-2410.03640).

Members sit at local maxima of the model's likelihood: perturbing a member raises its loss more
than perturbing a non-member. With the eps-MSE loss at timesteps T = {0, 50, ..., 450} and
perturbations P_lambda = centre crop to lambda x size, resized back (lambda in
linspace(0.95, 0.70, 10), as in wjfu99/MIA-Gen):

    L_t(x)        = || eps_theta(sqrt(abar_t) x + sqrt(1 - abar_t) e_t, t) - e_t ||^2
    F_t,lambda(x) = (L_t(P_lambda x) - L_t(x)) / L_t(x)          (the probabilistic fluctuation)
    pfami(x)      = 1/(|T| |Lambda|) sum_t sum_lambda F_t,lambda(x)   (metric variant: higher = member)

The same noise e_t is used for x and all its neighbours, so the fluctuation is not noise. On a
latent target the neighbours are made in pixel space and each is encoded (L_t is then on latents).
`pfami_nn` (the classifier variant) feeds the |T| x |Lambda| matrix of per-timestep fluctuations
to a logistic regression fit on the validation split.
Cost: |T| x (1 + |Lambda|) denoiser calls per example (110 with the defaults).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lab.attacks.base import Attack, LearnedAttack
from lab.attacks.loss import check_range
from lab.errors import LabError


def crop_resize(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Centre crop to `strength` x the side, resized back (bilinear): PFAMI's neighbour."""
    size = x.shape[-1]
    side = max(1, round(size * strength))
    top = (size - side) // 2
    crop = x[..., top : top + side, top : top + side]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _Fluctuation:
    pixel_input = True  # the crop-resize neighbours are images

    def _init_pfami(self, timesteps, strengths) -> None:
        self.timesteps, self.strengths = [int(t) for t in timesteps], [float(s) for s in strengths]
        if not self.timesteps or not self.strengths or not all(0 < s < 1 for s in self.strengths):
            raise LabError("pfami needs timesteps and perturbation strengths in (0, 1)")

    def check_timesteps(self) -> None:
        check_range("pfami", self.timesteps, self.num_train_timesteps)

    def fluctuations(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, |T|, |Lambda|) relative loss changes (L(P_lambda x) - L(x)) / L(x) per timestep."""
        with torch.no_grad():
            variants = self.to_latent(torch.cat([x0] + [crop_resize(x0, s) for s in self.strengths]))
        n = len(self.strengths) + 1
        out = torch.empty(x0.shape[0], len(self.timesteps), len(self.strengths), device=x0.device)
        for j, t in enumerate(self.timesteps):
            noise = self.noise(variants[: x0.shape[0]], rows, draw=j).repeat(n, 1, 1, 1)
            # the neighbours in batches of the attack's own size: one 11x batch is ~2.5x slower per row on a CPU
            eps = torch.cat([self.eps(chunk, t) for chunk in self.q_sample(variants, t, noise).split(x0.shape[0])])
            err = (eps - noise).pow(2).flatten(1).mean(1)
            losses = err.view(n, x0.shape[0])
            out[:, j] = ((losses[1:] - losses[0]) / losses[0].clamp_min(1e-12)).T
        return out


class PFAMI(_Fluctuation, Attack):
    def __init__(self, timesteps: list[int] = tuple(range(0, 500, 50)), strengths: list[float] = None, seed: int = 0):
        super().__init__(seed)
        strengths = list(strengths) if strengths is not None else torch.linspace(0.95, 0.70, 10).tolist()
        self.save_hyperparameters({"timesteps": list(timesteps), "strengths": strengths, "seed": seed})
        self._init_pfami(timesteps, strengths)

    def score(self, x0, rows):
        return self.fluctuations(x0, rows).mean(dim=(1, 2))


class PFAMINN(_Fluctuation, LearnedAttack):
    def __init__(self, timesteps: list[int] = tuple(range(0, 500, 50)), strengths: list[float] = None, C: float = 1.0, seed: int = 0):
        super().__init__(seed)
        strengths = list(strengths) if strengths is not None else torch.linspace(0.95, 0.70, 10).tolist()
        self.save_hyperparameters({"timesteps": list(timesteps), "strengths": strengths, "C": C, "seed": seed})
        self._init_pfami(timesteps, strengths)
        self.classifier = None

    def features(self, x0, rows):
        return self.fluctuations(x0, rows).flatten(1)

    def fit(self, features, is_member):
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(C=self.hparams.C, max_iter=2000))
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features):
        return torch.from_numpy(self.classifier.decision_function(features.double().numpy()))
