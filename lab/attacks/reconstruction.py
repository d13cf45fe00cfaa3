"""Reconstruction attack (Dubinski et al. 2023: realistic-mia-large-dm-2306.12983).

Noise the example to step t, denoise it back with deterministic DDIM in S steps, and compare:

    x_t      = sqrt(abar_t) x0 + sqrt(1 - abar_t) e           (e seeded per example)
    x^0      = DDIM(x_t; t -> ... -> 0, S steps, eta = 0)
    score    = SSIM(x^0, x0)   (metric 'ssim')   or   - || x^0 - x0 ||^2 / d   ('mse')

SSIM is torchmetrics' with its defaults (Gaussian window, sigma 1.5, 11 px: images need at least
11 px a side) and data range 2 (images in [-1, 1]).

A model reconstructs what it memorised more faithfully. On a latent target x0 is encoded, the
DDIM walk runs on latents, and x^0 is decoded: the comparison is always between images.
Cost: S denoiser calls per example.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from lab.attacks.base import Attack
from lab.errors import LabError

SSIM_WINDOW = 11  # torchmetrics' Gaussian window at sigma 1.5


class Reconstruction(Attack):
    pixel_input = True  # compared as images; the walk itself runs on latents for latent targets

    def __init__(self, timestep: int = 200, steps: int = 10, metric: str = "ssim", seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        if metric not in ("ssim", "mse"):
            raise LabError(f"reconstruction: metric must be 'ssim' or 'mse', got {metric!r}")
        if steps < 1 or timestep < steps:
            raise LabError(f"reconstruction needs 1 <= steps <= timestep, got steps {steps}, timestep {timestep}")
        self.timestep, self.steps, self.metric = int(timestep), int(steps), metric

    def bind(self, target, condition: str = "caption") -> "Reconstruction":
        super().bind(target, condition)
        if self.metric == "ssim" and min(target.image_shape[1:]) < SSIM_WINDOW:
            raise LabError(
                f"reconstruction: SSIM needs images of at least {SSIM_WINDOW} px a side,"
                f" the target's are {target.image_shape[1:]}; use metric: mse"
            )
        return self

    def check_timesteps(self) -> None:
        self.check_range([self.timestep], "timestep")

    def cost(self) -> tuple[int, int]:
        return self.steps, 0

    def reconstruct(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x = self.q_sample(x0, self.timestep, self.noise(x0, rows))
        grid = torch.linspace(self.timestep, 0, self.steps + 1).round().long().tolist()
        for t_from, t_to in zip(grid[:-1], grid[1:]):
            x = self.ddim_step(x, t_from, t_to, self.eps(x, t_from))
        return x

    def score(self, x0, rows):
        with torch.no_grad():
            z0 = self.to_latent(x0)
        z_hat = self.reconstruct(z0, rows)
        with torch.no_grad():
            x_hat = self.to_image(z_hat).clamp(-1, 1)
        if self.metric == "mse":
            return -(x_hat - x0).pow(2).flatten(1).mean(1)
        return structural_similarity_index_measure(x_hat, x0, data_range=2.0, reduction="none")
