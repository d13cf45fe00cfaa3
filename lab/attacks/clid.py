"""CLiD: conditional likelihood discrepancy (Zhai et al., NeurIPS 2024, "Membership Inference on
Text-to-Image Diffusion Models via Conditional Likelihood Discrepancy"; github.com/zhaisf/CLiD).

A member's likelihood depends more on its own caption than a non-member's. With the per-caption loss

    l(c') = 1/(|T| N) sum_{t in T} sum_{k=1..N} || eps_theta(z_tk, t, emb(c')) - e_tk ||^2 / d,
    z_tk  = sqrt(abar_t) z0 + sqrt(1 - abar_t) e_tk

(mean over the d latent entries; the same noise e_tk for every caption variant), the discrepancy
between the reduced captions c*_1..c*_K and the full caption c, and the plain loss:

    D(x) = 1/K sum_j ( l(c*_j) - l(c) ),    score(x) = alpha * D(x) + (1 - alpha) * (-l(c))

Higher = member. The reductions are the authors' "simple clipping" (mia_CLiD_clip.py): the first,
middle and last third of the caption's characters, plus the empty caption "" (K = 4;
`reductions: null` keeps only ""). Their default, importance clipping, needs word weights from an
external model (PromptCharm); in their Table D.1 simple clipping is within 0.2 AUC of it.
Defaults as the paper: t in {440, 450, 460}, one noise per timestep (3 + 4 x 3 = 15 denoiser calls).
CLiD_th standardises D and L with a robust scaler fit on a shadow model and picks alpha there;
here the raw terms are used and alpha = 1 (the discrepancy alone), which ranks examples exactly as
CLiD_th at alpha = 1 (a robust scaler is monotone). Draw i*N + k of the example's seeded noise is
e_{t_i, k}. The attack always uses the caption and its reductions, whatever `condition` says.

The paper's learned combinations, CLiD_th and CLiD_vec, are `lab.attacks.clid_learned`.
"""

from __future__ import annotations

import torch

from lab.attacks.base import Attack
from lab.errors import LabError, check_number

REDUCTIONS = ("thirds", "null")


def reduced_captions(caption: str, reductions: str) -> list[str]:
    """c*_1..c*_K of one caption: its character thirds and "" ('thirds'), or "" alone ('null')."""
    if reductions == "null":
        return [""]
    n = len(caption)
    return [caption[: n // 3], caption[n // 3 : 2 * n // 3], caption[2 * n // 3 :], ""]


class CaptionLosses:
    """What the three CLiD attacks share: the settings and the terms [-l(c), D_1, ..., D_K]."""

    uses_condition = False  # always the caption and its reductions
    text_to_image_only = "it compares losses under different captions"

    def _settings(self, timesteps, num_noise, reductions, objective: str = "model") -> None:
        self.set_objective(objective)
        if reductions not in REDUCTIONS:
            raise LabError(f"clid: reductions must be one of {', '.join(REDUCTIONS)}, got {reductions!r}")
        check_number("clid: num_noise", num_noise, minimum=1, integer=True)
        self.timesteps, self.num_noise, self.reductions = [int(t) for t in timesteps], int(num_noise), reductions
        if not self.timesteps:
            raise LabError("clid needs at least one timestep")

    def check_timesteps(self) -> None:
        self.check_range(self.timesteps)

    def cost(self) -> tuple[int, int]:
        return len(self.timesteps) * self.num_noise * (1 + len(reduced_captions("", self.reductions))), 0

    def loss(self, x0: torch.Tensor, draws: list[torch.Tensor], context: torch.Tensor) -> torch.Tensor:
        """l(c') per example for prompt embeddings `context`, over every (timestep, draw)."""
        out = torch.zeros(x0.shape[0], device=x0.device)
        with self.conditioned_on(context):
            for i, t in enumerate(self.timesteps):
                for k in range(self.num_noise):
                    noise = draws[i * self.num_noise + k]
                    out += self.error(self.q_sample(x0, t, noise), t, x0, noise).pow(2).flatten(1).mean(1)
        return out / (len(self.timesteps) * self.num_noise)

    def terms(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K): -l(c), then l(c*_j) - l(c) for each reduction j."""
        if self.batch_captions is None:
            raise LabError("clid: the examples have no captions")
        draws = [self.noise(x0, rows, draw=d) for d in range(len(self.timesteps) * self.num_noise)]
        full = self.loss(x0, draws, self.embed(self.batch_captions))
        variants = zip(*[reduced_captions(c, self.reductions) for c in self.batch_captions])  # c*_j of every example
        gaps = [self.loss(x0, draws, self.embed(list(v))) - full for v in variants]
        return torch.stack([-full, *gaps], 1)


class CLiD(CaptionLosses, Attack):
    """The threshold score alpha * D + (1 - alpha) * (-l(c)) on the raw terms (alpha = 1: D alone)."""

    def __init__(
        self,
        timesteps: list[int] = (440, 450, 460),
        num_noise: int = 1,
        reductions: str = "thirds",
        alpha: float = 1.0,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(seed)
        self.save_hyperparameters()
        self._settings(timesteps, num_noise, reductions, objective)
        check_number("clid: alpha", alpha, minimum=0)
        if alpha > 1:
            raise LabError(f"clid: alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def score(self, x0, rows):
        v = self.terms(x0, rows)
        return self.alpha * v[:, 1:].mean(1) + (1 - self.alpha) * v[:, 0]
