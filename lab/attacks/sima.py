"""SimA: score-based membership inference (Rao, Qu, Moyer, TMLR 2025; mx-ethan-rao/SimA).

One query on the CLEAN image: the denoiser's output eps_theta(x0, t) estimates -sqrt(1 - abar_t)
times the score of the noised data density at x0, which points from x0 to a kernel-weighted mean
of nearby training points. At a training point that pull vanishes, so its norm is small:

    sima(x0) = - || eps_theta(x0, t) ||_p^p / d,        p = 4           (1 denoiser call)

The authors (DDPM/components.py) sum |eps|^4 over pixels (the mean here ranks the same) and sweep
t = 0, interval, ..., interval x attack_num (0..200 in their README), reporting the best t, which
they pick on the evaluation data itself. The lab runs one t per attack (default 100, a "moderately
early" step) and sweeps with `lab.attack --sweep_timesteps '[0, 20, 50, 100, 200]'`, which reports
every t, so that "which t" is measured on the test split, not chosen on it.
The Monte-Carlo variant SimA-MC is not here: its definition is in neither the stored copies of the
authors' code nor the paper text available to the lab, and a guess under its name would not be it.
"""

from __future__ import annotations

from lab.attacks.base import Attack
from lab.errors import check_number


class SimA(Attack):
    sweep_setting = "timestep"

    def __init__(self, timestep: int = 100, p: float = 4.0, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        check_number("sima: timestep", timestep, minimum=0, integer=True)
        check_number("sima: the norm order p", p, above=0)
        self.timestep, self.p = int(timestep), float(p)

    def check_timesteps(self) -> None:
        self.check_range([self.timestep])

    def cost(self) -> tuple[int, int]:
        return 1, 0

    def norm(self, x):
        return self.eps(x, self.timestep).abs().pow(self.p).flatten(1).mean(1)

    def score(self, x0, rows):
        return -self.norm(x0)
