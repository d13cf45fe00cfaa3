"""Loss attack: threshold on the training loss (Matsumoto et al. 2023; data-forensics-2302.07801).

    score(x0) = - 1/(|T| K) sum_{t in T} sum_{k=1..K} || eps_theta(x_tk, t) - e_k ||^2,
    x_tk      = sqrt(abar_t) x0 + sqrt(1 - abar_t) e_k

with e_k ~ N(0, I) seeded per example. Members were fit, so their loss is lower.
Cost: |T| x K denoiser calls per example.
"""

from __future__ import annotations

import torch

from lab.attacks.base import Attack
from lab.errors import LabError


class LossAttack(Attack):
    sweep_setting = "timesteps"

    def __init__(self, timesteps: list[int] = (100,), num_noise: int = 4, objective: str = "model", seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self.set_objective(objective)
        self.timesteps, self.num_noise = [int(t) for t in timesteps], int(num_noise)
        if not self.timesteps or self.num_noise < 1:
            raise LabError("loss attack needs at least one timestep and num_noise >= 1")

    def check_timesteps(self) -> None:
        self.check_range(self.timesteps)

    def cost(self) -> tuple[int, int]:
        return len(self.timesteps) * self.num_noise, 0

    def losses(self, x0: torch.Tensor, rows: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
        """(B, len(timesteps)) per-example losses, each averaged over the K noise draws."""
        out = torch.zeros(x0.shape[0], len(timesteps), device=x0.device)
        for k in range(self.num_noise):
            noise = self.noise(x0, rows, draw=k)
            for j, t in enumerate(timesteps):
                err = self.error(self.q_sample(x0, t, noise), t, x0, noise)
                out[:, j] += err.pow(2).flatten(1).mean(1) / self.num_noise
        return out

    def score(self, x0, rows):
        return -self.losses(x0, rows, self.timesteps).mean(1)
