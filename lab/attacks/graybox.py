"""Gray-box attack: only the sampler's intermediate outputs (data-forensics-2302.07801).

The attacker cannot read eps_theta, but can run the target's sampler one step from an input of
its choosing and read the output (as an API that shows intermediate images does). For t on a
grid below a truncation point, with the same seeded noise e at both ends:

    x_t     = sqrt(abar_t) x0 + sqrt(1 - abar_t) e
    out_t   = Sampler(x_t; t -> t - step)                      (the target's DDIM step, eta = 0)
    L~_t    = || out_t - (sqrt(abar_{t-step}) x0 + sqrt(1 - abar_{t-step}) e) ||^2
    score   = - mean_t L~_t

Only `out_t` is read from the target; the loss is estimated from it, truncated as in the paper.
With an unclipped DDIM step, L~_t = c_t^2 || eps_theta(x_t, t) - e ||^2 exactly, where
c_t = sqrt(1 - abar_{t-step}) - sqrt(abar_{t-step} / abar_t) sqrt(1 - abar_t): the sampler's clipping
of the predicted x0 (on by default in pixel DDPM schedulers) is switched off, or the estimate would
stop tracking the loss (ratio 0.73 to 15 across t, seen here).
Cost: one sampler step (one denoiser call) per grid timestep per example.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from lab.attacks.base import Attack
from lab.errors import LabError


class GrayBox(Attack):
    def __init__(self, grid_step: int = 20, truncation: int = 200, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        if grid_step < 1 or truncation < grid_step:
            raise LabError("graybox needs grid_step >= 1 and truncation >= grid_step")
        self.grid_step, self.truncation = int(grid_step), int(truncation)

    def bind(self, target, condition: str = "caption") -> "GrayBox":
        super().bind(target, condition)
        if self.num_train_timesteps % self.grid_step:
            raise LabError(
                f"graybox: grid_step {self.grid_step} must divide the schedule's {self.num_train_timesteps} steps"
            )
        # The sampler the target ships may clip or threshold its predicted x0 (the lab's pixel exports have
        # clip_sample: true); the one-step estimate is then no longer c_t^2 x the loss. Turn both off.
        self.sampler = DDIMScheduler.from_config(target.scheduler.config, clip_sample=False, thresholding=False)
        self.sampler.num_inference_steps = self.num_train_timesteps // self.grid_step  # one step = grid_step
        return self

    def check_timesteps(self) -> None:
        self.check_range([self.truncation], "truncation")

    def cost(self) -> tuple[int, int]:
        return self.truncation // self.grid_step, 0  # one sampler step per grid timestep

    def sampler_step(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The box: the target's DDIM sampler moving x_t from t to t - grid_step (an API call)."""
        return self.sampler.step(self.model_output(x_t, t), t, x_t, eta=0.0).prev_sample

    def score(self, x0, rows):
        noise = self.noise(x0, rows)
        losses = []
        for t in range(self.grid_step, self.truncation + 1, self.grid_step):
            out = self.sampler_step(self.q_sample(x0, t, noise), t)
            losses.append((out - self.q_sample(x0, t - self.grid_step, noise)).pow(2).flatten(1).mean(1))
        return -torch.stack(losses, 1).mean(1)
