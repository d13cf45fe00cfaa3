"""Gradient-norm attack (Dubinski et al. 2023: realistic-mia-large-dm-2306.12983).

A member sits near a minimum of the training loss, so the loss's gradient with respect to the
weights is small there:

    score(x0) = - || d/d theta  1/(|T| K) sum_{t in T} sum_k || eps_theta(x_tk, t) - e_k ||^2 ||_2,
    x_tk      = sqrt(abar_t) x0 + sqrt(1 - abar_t) e_k

over all trainable weights, with seeded noise e_k. Cost: |T| x K denoiser calls (one batched
forward) and one backward pass per example.
"""

from __future__ import annotations

import torch

from lab.attacks.base import Attack
from lab.errors import LabError


class GradientNorm(Attack):
    needs_grad = True

    def __init__(self, timesteps: list[int] = (100,), num_noise: int = 4, objective: str = "model", seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters(
            {"timesteps": list(timesteps), "num_noise": num_noise, "objective": objective, "seed": seed}
        )
        self.set_objective(objective)
        self.timesteps, self.num_noise = [int(t) for t in timesteps], int(num_noise)
        if not self.timesteps or self.num_noise < 1:
            raise LabError("gradient_norm needs at least one timestep and num_noise >= 1")

    def check_timesteps(self) -> None:
        self.check_range(self.timesteps)

    def cost(self) -> tuple[int, int]:
        return len(self.timesteps) * self.num_noise, 1  # one batched forward, one backward

    def score(self, x0, rows):
        params = list(self.unet.parameters())
        draws = [self.noise(x0, rows, draw=k) for k in range(self.num_noise)]
        t = torch.tensor(self.timesteps, device=x0.device).repeat(self.num_noise)
        a = self.abar(t).view(-1, 1, 1, 1)
        scores = []
        for i in range(x0.shape[0]):
            noise = torch.stack([d[i] for d in draws]).repeat_interleave(len(self.timesteps), 0)
            with torch.enable_grad(), self.example(i):
                for p in params:
                    p.requires_grad_(True)
                x_t = a.sqrt() * x0[i : i + 1] + (1 - a).sqrt() * noise
                loss = self.error(x_t, t, x0[i : i + 1], noise).pow(2).mean()
                grads = self.grad(loss, params)
                for p in params:
                    p.requires_grad_(False)
            scores.append(-torch.sqrt(sum(g.pow(2).sum() for g in grads)))
        return torch.stack(scores)
