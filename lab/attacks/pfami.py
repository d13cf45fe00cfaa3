"""PFAMI: probabilistic-fluctuation membership inference (Fu et al. 2023; wjfu99/MIA-Gen; in copymark-2410.03640).

Members sit at local maxima of the model's likelihood: perturbing a member raises its loss more
than perturbing a non-member. With the eps-MSE loss at timesteps T = {0, 50, ..., 450} and
perturbations P_lambda = centre crop to lambda x size, resized back:

    L_t(x)        = || eps_theta(sqrt(abar_t) x + sqrt(1 - abar_t) e, t) - e ||^2 / d
    F_t,lambda(x) = (L_t(P_lambda x) - L_t(x)) / L_t(x)          (the probabilistic fluctuation)
    pfami(x)      = 1/(|T| |Lambda|) sum_t sum_lambda F_t,lambda(x)   (higher = member)

Defaults are the authors' (wjfu99/MIA-Gen, `attack_model_PFAMI.py`): their metric ("stat") variant
averages over t at ONE strength, lambda = linspace(0.95, 0.70, 10)[5] = 0.811, and every loss draws
fresh noise: the image and each neighbour get their own e (`noise: fresh`; for copy c at timestep
index j, draw j (1 + |Lambda|) + c, c = 0 the image, 1.. the neighbours). `noise: shared` gives all
copies of one timestep the same e (draw j): a lower-variance estimate of the same quantity, not the
authors'. Their reference-model calibration is not applied (no reference model is assumed).
On a latent target the neighbours are made in pixel space and each is encoded (L_t on latents).
`pfami_nn` (the classifier variant) feeds the |T| x |Lambda| matrix of fluctuations at all ten
strengths linspace(0.95, 0.70, 10) to a logistic regression fit on the validation split (the
authors train a small ResNet on shadow-model features; with a validation split of tens of rows a
linear model is what can be fit).
Cost: |T| x (1 + |Lambda|) denoiser calls per example (20 for pfami, 110 for pfami_nn).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lab.attacks.base import Attack, LearnedAttack
from lab.errors import LabError

TIMESTEPS = tuple(range(0, 500, 50))
STRENGTHS = tuple(float(s) for s in np.linspace(0.95, 0.70, 10))  # the authors' ten crop strengths
NOISE = ("fresh", "shared")


def crop_resize(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Centre crop to `strength` x the side, resized back (bilinear): PFAMI's neighbour."""
    size = x.shape[-1]
    side = max(1, round(size * strength))
    top = (size - side) // 2
    crop = x[..., top : top + side, top : top + side]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _Fluctuation:
    pixel_input = True  # the crop-resize neighbours are images

    def _init_pfami(self, timesteps, strengths, noise: str) -> None:
        self.timesteps, self.strengths = [int(t) for t in timesteps], [float(s) for s in strengths]
        if not self.timesteps or not self.strengths or not all(0 < s < 1 for s in self.strengths):
            raise LabError("pfami needs timesteps and perturbation strengths in (0, 1)")
        if noise not in NOISE:
            raise LabError(f"pfami: noise must be one of {', '.join(NOISE)}, got {noise!r}")
        self.fresh_noise = noise == "fresh"

    def check_timesteps(self) -> None:
        self.check_range(self.timesteps)

    def cost(self) -> tuple[int, int]:
        return len(self.timesteps) * (1 + len(self.strengths)), 0

    def fluctuations(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, |T|, |Lambda|) relative loss changes (L(P_lambda x) - L(x)) / L(x) per timestep."""
        with torch.no_grad():
            variants = self.to_latent(torch.cat([x0] + [crop_resize(x0, s) for s in self.strengths]))
        n, b = len(self.strengths) + 1, x0.shape[0]
        out = torch.empty(b, len(self.timesteps), len(self.strengths), device=x0.device)
        for j, t in enumerate(self.timesteps):
            if self.fresh_noise:  # the authors' choice: every copy its own draw
                noise = torch.cat([self.noise(variants[:b], rows, draw=j * n + c) for c in range(n)])
            else:
                noise = self.noise(variants[:b], rows, draw=j).repeat(n, 1, 1, 1)
            # the neighbours in batches of the attack's own size: one 11x batch is ~2.5x slower per row on a CPU
            chunks = zip(*(v.split(b) for v in (self.q_sample(variants, t, noise), variants, noise)))
            err = torch.cat([self.error(x_t, t, z0, e) for x_t, z0, e in chunks]).pow(2).flatten(1).mean(1)
            losses = err.view(n, x0.shape[0])
            out[:, j] = ((losses[1:] - losses[0]) / losses[0].clamp_min(1e-12)).T
        return out


class PFAMI(_Fluctuation, Attack):
    def __init__(
        self,
        timesteps: list[int] = TIMESTEPS,
        strengths: list[float] | None = None,
        noise: str = "fresh",
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        strengths = list(strengths) if strengths is not None else [STRENGTHS[5]]
        self.save_hyperparameters(
            {
                "timesteps": list(timesteps),
                "strengths": strengths,
                "noise": noise,
                "objective": objective,
                "seed": seed,
            }
        )
        self.set_objective(objective)
        self._init_pfami(timesteps, strengths, noise)

    def score(self, x0, rows):
        return self.fluctuations(x0, rows).mean(dim=(1, 2))


class PFAMINN(_Fluctuation, LearnedAttack):
    def __init__(
        self,
        timesteps: list[int] = TIMESTEPS,
        strengths: list[float] | None = None,
        noise: str = "fresh",
        C: float = 1.0,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        strengths = list(strengths) if strengths is not None else list(STRENGTHS)
        self.save_hyperparameters(
            {
                "timesteps": list(timesteps),
                "strengths": strengths,
                "noise": noise,
                "C": C,
                "objective": objective,
                "seed": seed,
            }
        )
        self.set_objective(objective)
        self._init_pfami(timesteps, strengths, noise)
        self.classifier = None

    def features(self, x0, rows):
        return self.fluctuations(x0, rows).flatten(1)

    def fit(self, features, is_member):
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(C=self.hparams.C, max_iter=2000))
        self.classifier.fit(features.double().numpy(), is_member.numpy())

    def decision(self, features):
        return torch.from_numpy(self.classifier.decision_function(features.double().numpy()))
