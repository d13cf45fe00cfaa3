"""Multi-timestep loss with truncation and a statistic (Zhu, Chen, Grossklags, Fritz: data-forensics-2302.07801).

    L_t(x0)  = || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) e_t, t) - e_t ||^2     for t in a grid
    score(x0) = - stat_{t in grid, t <= truncation} L_t(x0),   stat in {mean, median, min, max, sum}

Truncation drops the large-t terms (the first steps of denoising): their loss is large and
noisy and drowns the membership signal of small t. Only kept timesteps are evaluated.
Cost: (number of kept timesteps) x K denoiser calls per example.
"""

from __future__ import annotations

from lab.attacks.loss import LossAttack
from lab.errors import LabError

STATISTICS = {
    "mean": lambda x: x.mean(1),
    "median": lambda x: x.median(1).values,
    "min": lambda x: x.min(1).values,
    "max": lambda x: x.max(1).values,
    "sum": lambda x: x.sum(1),
}


class MultistepLossAttack(LossAttack):
    sweep_setting = None  # a grid of its own

    def __init__(
        self,
        grid_step: int = 20,
        truncation: int = 200,
        statistic: str = "mean",
        num_noise: int = 1,
        objective: str = "model",
        seed: int = 0,
    ):
        if statistic not in STATISTICS:
            raise LabError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
        if grid_step < 1 or truncation < 0:
            raise LabError("multistep_loss needs grid_step >= 1 and truncation >= 0")
        super().__init__(
            timesteps=list(range(0, truncation + 1, grid_step)), num_noise=num_noise, objective=objective, seed=seed
        )
        self.save_hyperparameters(ignore=["timesteps"])
        self.statistic = statistic

    def score(self, x0, rows):
        return -STATISTICS[self.statistic](self.losses(x0, rows, self.timesteps))
