"""PIA and PIAN: proximal initialization attack (Kong et al. 2023, pia-2305.18355).

    eps0     = eps_theta(x0, 0)                          (PIAN: eps0 / mean|eps0| * sqrt(2 / pi))
    x_t      = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps0   (a point on the "ground-truth" trajectory)
    score(x0) = - || eps_theta(x_t, t) - eps0 ||_p^p / d,   p = 4

The model's own output at t = 0 replaces random noise, so the attack is deterministic and
costs exactly 2 denoiser calls per example. (Feeding random noise instead would make it a
loss attack.) PIAN rescales eps0 to the mean absolute value of a standard Gaussian.
"""

from __future__ import annotations

import math

from lab.attacks.base import Attack
from lab.errors import LabError


class PIA(Attack):
    normalized = False
    sweep_setting = "timestep"

    def __init__(self, timestep: int = 200, p: float = 4.0, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        if p <= 0:
            raise LabError(f"pia: the norm order p must be positive, got {p}")
        self.timestep, self.p = int(timestep), float(p)

    def check_timesteps(self) -> None:
        self.check_range([self.timestep])

    def cost(self) -> tuple[int, int]:
        return 2, 0

    def score(self, x0, rows):
        eps0 = self.eps(x0, 0)
        if self.normalized:
            eps0 = eps0 / eps0.abs().flatten(1).mean(1).view(-1, 1, 1, 1) * math.sqrt(2 / math.pi)
        x_t = self.q_sample(x0, self.timestep, eps0)
        return -(self.eps(x_t, self.timestep) - eps0).abs().pow(self.p).flatten(1).mean(1)


class PIAN(PIA):
    normalized = True
