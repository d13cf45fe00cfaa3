"""LiRA: likelihood-ratio attack with reference models (Carlini et al. 2022; 2023 for diffusion).

K reference targets are trained with `lab.fit` (`scripts/train_references.py`, `lab.fit.fit_references`)
on draws from the target's example pool, each the size of the TARGET's member set (Carlini et al.
match the shadow models' training-set size to the target's: a reference trained on more examples
memorises less, and its in/out distributions are not the target's), balanced so that every example
is "in" as many references as the draw allows. With the loss statistic
l_m(x) = log( 1/(|T| K') sum || eps_m(x_t, t) - e ||^2 / d ) under model m (the same seeded noise
for every model):

    online:   score(x) = log N(l_target(x); mu_in(x), s_in^2) - log N(l_target(x); mu_out(x), s_out^2)
    offline:  score(x) = (mu_out(x) - l_target(x)) / s_out            (one-sided: a low loss is "in")

mu_in(x), mu_out(x) are the example's mean statistic over the references it was in (out of).
Variance: with fewer than `GLOBAL_VARIANCE_BELOW` = 64 references (Carlini et al.: per-example
variances need many models) s_in and s_out are global, the within-example residuals
l_m(x) - mu(x) pooled over every example of the split (degrees of freedom: observations minus
examples). The authors' code (tensorflow/privacy, mi_lira_2021) takes np.std of all raw in-scores,
which also counts the spread between examples' means, and the median for mu; the pooled residual
variance is the Gaussian model's own estimate, so it is used here. From 64 references on, or with
`variance: per_example`, each example gets its own (unbiased) variances.
The online variant runs when every example is in and out of at least one reference (two with
per-example variances), the offline one when only the "out" side has that; otherwise an error.
The statistics are computed per batch; the scores once every example has them (`finalize`), so
the pooled variance does not depend on the batch size.
`num_references: K` uses the first K runs of a larger set (the draw is greedy, so its first K are
balanced too): one set of references serves K = 2, 4, 8.
Cost: (1 + K) x |T| x K' denoiser calls per example.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from lab.attacks.loss import LossAttack
from lab.data.split import MembershipSplit
from lab.errors import LabError, check_number

GLOBAL_VARIANCE_BELOW = 64  # references; Carlini et al.: per-example variances need many more than a handful
VARIANCES = ("auto", "global", "per_example")


def reference_splits(
    pool: MembershipSplit, k: int, seed: int = 0, members: int | None = None
) -> list[MembershipSplit]:
    """K splits of the pool, each with `members` members (default: as many as the pool's own split has).

    Balanced: each reference takes the examples that are "in" the fewest references so far (ties at
    random), so every example is in floor or ceil of K x members / N references.
    """
    n = len(pool.ids)
    members = pool.roles.count("member") if members is None else int(members)
    if not 1 <= members < n:
        raise LabError(f"lira: a reference needs between 1 and {n - 1} members, got {members}")
    rng = np.random.default_rng(seed)
    count = np.zeros(n, dtype=int)
    out = []
    for j in range(k):
        order = np.lexsort((rng.random(n), count))  # fewest references first, random among equals
        chosen = np.zeros(n, dtype=bool)
        chosen[order[:members]] = True
        count += chosen
        out.append(
            dataclasses.replace(
                pool, roles=["member" if m else "nonmember" for m in chosen], seed=int(seed * 1000 + j)
            )
        )
    return out


def reference_exports(references: str | Path, epoch: int | None, num_references: int | None = None) -> list[Path]:
    """One export per reference run (the first `num_references` runs, default all): the one at
    `epoch` if it has it, else its last."""
    from lab.targets.load import target_folders

    root = Path(references)
    runs = sorted(p for p in root.glob("ref_*") if p.is_dir()) if root.is_dir() else []
    if not runs:
        raise LabError(
            f"lira: no reference runs (ref_*/) in {references}; train them with scripts/train_references.py"
        )
    if num_references is not None:
        if num_references > len(runs):
            raise LabError(
                f"lira: num_references is {num_references} but {references} holds {len(runs)} reference runs"
            )
        runs = runs[:num_references]
    chosen = []
    for run in runs:
        exports = target_folders(run)
        match = [e for e in exports if e.name == f"epoch_{epoch:04d}"] if epoch is not None else []
        chosen.append(match[0] if match else exports[-1])
    return chosen


class LiRA(LossAttack):
    conditional_ok = False
    unconditional_only = "its reference targets are trained by lab.fit's unconditional configs"
    sweep_setting = None
    pixel_input = True  # each model (target, references) encodes with its own autoencoder

    def __init__(
        self,
        references: str = "references",
        timesteps: list[int] = (100,),
        num_noise: int = 4,
        variance: str = "auto",
        num_references: int | None = None,
        objective: str = "model",
        seed: int = 0,
    ):
        super().__init__(timesteps=timesteps, num_noise=num_noise, objective=objective, seed=seed)
        self.save_hyperparameters()
        if variance not in VARIANCES:
            raise LabError(f"lira: variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
        if num_references is not None:
            check_number("lira: num_references", num_references, minimum=2, integer=True)
        self.references, self.variance, self.num_references = references, variance, num_references

    def bind(self, target, condition: str = "caption") -> "LiRA":
        from lab.targets.load import load_target

        super().bind(target, condition)
        refs = [load_target(p) for p in reference_exports(self.references, target.epoch, self.num_references)]
        self.models = [(self.unet, self.autoencoder)] + [(r.unet, r.autoencoder) for r in refs]
        ids = target.split.ids
        # is_in[m, row]: was example `row` of the target's split a member of reference m?
        self.is_in = torch.zeros(len(refs), len(ids), dtype=torch.bool)
        for m, ref in enumerate(refs):
            role = dict(zip(ref.split.ids, ref.split.roles))
            missing = [i for i in ids if i not in role]
            if missing:
                raise LabError(
                    f"lira: reference {ref.path} was not trained on the target's pool (e.g. {missing[0]} is missing)"
                )
            self.is_in[m] = torch.tensor([role[i] == "member" for i in ids])
        self.global_variance = self.variance == "global" or (
            self.variance == "auto" and len(refs) < GLOBAL_VARIANCE_BELOW
        )
        need = 1 if self.global_variance else 2
        n_in, n_out = self.is_in.sum(0), (~self.is_in).sum(0)
        if bool((n_in >= need).all() and (n_out >= need).all()):
            self.online = True
        elif bool((n_out >= need).all()):
            self.online = False
        else:
            raise LabError(
                f"lira: every example must be out of at least {need} of the {len(refs)} references: train more"
            )
        self.setup_calls = 0
        return self

    def cost(self) -> tuple[int, int]:
        return len(self.models) * len(self.timesteps) * self.num_noise, 0  # the target and each of its K references

    def statistic(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """log mean loss of the model currently bound (`self.unet`, `self.autoencoder`)."""
        with torch.no_grad():
            z0 = self.to_latent(x0)
        return self.losses(z0, rows, self.timesteps).mean(1).clamp_min(1e-12).log()

    def score(self, x0, rows):
        stats = []
        for unet, autoencoder in self.models:  # the target first, then each reference
            self.unet = unet.to(x0.device)
            self.autoencoder = autoencoder.to(x0.device) if autoencoder is not None else None
            stats.append(self.statistic(x0, rows))
        self.unet, self.autoencoder = self.models[0]
        return torch.stack(stats, 1)  # (B, 1 + K): scored in `finalize`, once every example has them

    def finalize(self, values, rows, split):
        stats = values.double().T  # (1 + K, N)
        return lira_scores(
            stats[0], stats[1:], self.is_in[:, torch.as_tensor(rows)], self.global_variance, self.online
        ).numpy()


def lira_scores(
    target: torch.Tensor, refs: torch.Tensor, is_in: torch.Tensor, global_variance: bool, online: bool
) -> torch.Tensor:
    """Scores from the target's statistic (B,), the references' (K, B) and who was in which (K, B);
    a global variance pools over all B examples."""
    mu_out, s_out = _masked_stats(refs, ~is_in, global_variance)
    if not online:
        return (mu_out - target) / s_out
    mu_in, s_in = _masked_stats(refs, is_in, global_variance)
    return _log_normal(target, mu_in, s_in) - _log_normal(target, mu_out, s_out)


def _masked_stats(values: torch.Tensor, mask: torch.Tensor, pooled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example means over the masked references, and the per-example or pooled standard deviation."""
    n = mask.sum(0)
    mean = (values * mask).sum(0) / n.clamp_min(1)
    squares = ((values - mean).pow(2) * mask).sum(0)
    if pooled:
        var = (squares.sum() / (n.sum() - (n > 0).sum()).clamp_min(1)).expand_as(mean)
    else:
        var = squares / (n - 1)
    return mean, var.sqrt().clamp_min(1e-4)


def _log_normal(x: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / s).pow(2) - s.log() - 0.5 * math.log(2 * math.pi)
