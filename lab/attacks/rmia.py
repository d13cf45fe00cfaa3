"""RMIA: relative membership inference with reference models (Zarifzadeh, Liu, Cheng, Shokri, ICML 2024).

Authors' code: privacytrustlab/ml_privacy_meter (`modules/mia/attacks/rmia.py`). The reference
targets are LiRA's (`scripts/train_references.py`, `lab.fit.fit_references`), the statistic is
LiRA's loss statistic l(x) = log mean || eps_m(x_t, t) - e ||^2 / d (same seeded noise for every
model), and the likelihood of x under model m is taken as Pr(x | m) = exp(-exp(l_m(x))), i.e.
exp(-mean loss), which lies in (0, 1] as the paper's probabilities do. Then

    Pr(x)      online:  1/2 (mean_{m: x in m} Pr(x|m) + mean_{m: x out of m} Pr(x|m))
               offline: 1/2 ((1 + a) mean_{m: x out of m} Pr(x|m) + (1 - a))     (a = `offline_a`)
    LR(x, z) = [Pr(x | target) / Pr(x)] / [Pr(z | target) / Pr(z)]
    score(x) = | { z in Z, z != x : LR(x, z) > gamma } | / | Z \\ {x} |

The population Z is the split's validation non-members: examples the attacker knows were not
trained on (the rows the lab already uses to pick thresholds), each with Pr(z) by the same rule.
Defaults are Privacy Meter's: gamma = 1, a = 0.3 (the authors tune a on a paired reference model;
the lab keeps it fixed so that no labels are used). Online when every example is in and out of at
least one reference, else offline (the paper's setting with few references).
Cost: (1 + K) x |T| x K' denoiser calls per example, as LiRA.
"""

from __future__ import annotations

import torch

from lab.attacks.lira import LiRA
from lab.errors import LabError, check_number


class RMIA(LiRA):
    conditional_ok = False
    unconditional_only = "its reference targets are trained by lab.fit's unconditional configs"

    def __init__(
        self,
        references: str = "references",
        timesteps: list[int] = (100,),
        num_noise: int = 4,
        offline_a: float = 0.3,
        gamma: float = 1.0,
        num_references: int | None = None,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(
            references=references,
            timesteps=timesteps,
            num_noise=num_noise,
            variance="auto",
            num_references=num_references,
            objective=objective,
            seed=seed,
        )
        check_number("rmia: offline_a", offline_a, minimum=0.0, maximum=1.0)
        check_number("rmia: gamma", gamma, minimum=0.0)
        self.save_hyperparameters()
        self.hparams.pop("variance", None)  # LiRA's; RMIA has no variance
        self.offline_a, self.gamma = float(offline_a), float(gamma)

    def bind(self, target, condition: str = "caption") -> "RMIA":
        super().bind(target, condition)
        n_in, n_out = self.is_in.sum(0), (~self.is_in).sum(0)
        self.online = bool((n_in >= 1).all() and (n_out >= 1).all())
        if not bool((n_out >= 1).all()):
            raise LabError(
                f"rmia: every example must be out of at least one of the {len(self.is_in)} references: train more"
            )
        return self

    def finalize(self, values, rows, split):
        rows = torch.as_tensor(rows)
        population = torch.tensor(
            [split.roles[r] == "nonmember" and split.eval_splits[r] == "validation" for r in rows.tolist()]
        )
        if int(population.sum()) < 2:
            raise LabError("rmia needs at least 2 non-members in the validation split (its population z)")
        stats = values.double().T  # (1 + K, N)
        return rmia_scores(
            stats[0], stats[1:], self.is_in[:, rows], population, self.online, self.offline_a, self.gamma
        ).numpy()


def rmia_scores(
    target: torch.Tensor,
    refs: torch.Tensor,
    is_in: torch.Tensor,
    population: torch.Tensor,
    online: bool,
    offline_a: float = 0.3,
    gamma: float = 1.0,
) -> torch.Tensor:
    """RMIA scores from the target's log-loss statistic (B,), the references' (K, B), who was in which
    reference (K, B) and which examples are the population z (B,)."""
    p_target, p_refs = (-target.double().exp()).exp(), (-refs.double().exp()).exp()
    out = ~is_in
    mean_out = (p_refs * out).sum(0) / out.sum(0).clamp_min(1)
    if online:
        mean_in = (p_refs * is_in).sum(0) / is_in.sum(0).clamp_min(1)
        p_x = 0.5 * (mean_in + mean_out)
    else:
        p_x = 0.5 * ((1 + offline_a) * mean_out + (1 - offline_a))
    ratio = p_target / p_x  # (B,)
    z = torch.nonzero(population).flatten()
    wins = ratio[:, None] / ratio[None, z] > gamma  # (B, |Z|)
    itself = torch.arange(len(ratio))[:, None] == z[None, :]
    return (wins & ~itself).sum(1).double() / (len(z) - itself.sum(1)).double()
