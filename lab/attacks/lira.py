"""LiRA: likelihood-ratio attack with reference models (Carlini et al. 2022; 2023 for diffusion).

K reference targets are trained with `lab.fit` on random halves of the example pool
(`train_references`, or `scripts/train_references.py`): each example is "in" exactly half of
them and "out" of the others. With
the loss statistic l_m(x) = log( 1/(|T| K') sum || eps_m(x_t, t) - e ||^2 ) under model m (the
same seeded noise for every model):

    online:   score(x) = log N(l_target(x); mu_in(x), s_in(x)^2) - log N(l_target(x); mu_out(x), s_out(x)^2)
    offline:  score(x) = (mu_out(x) - l_target(x)) / s_out(x)          (when examples are never "in")

mu and s are each example's mean and standard deviation over the references it was in (out of).
Calibrating per example removes what makes an example easy or hard regardless of membership.
The online variant is used when every example is in and out of at least 2 references, the
offline one when every example is out of at least 2; anything else is an error.
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
from lab.errors import LabError


def reference_splits(pool: MembershipSplit, k: int, seed: int = 0) -> list[MembershipSplit]:
    """K splits of the pool in which every example is a member of exactly floor(K/2) references."""
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((len(pool.ids), k)), axis=1)  # a random order of the K references per example
    is_in = ranks < k // 2
    return [
        dataclasses.replace(pool, roles=["member" if m else "nonmember" for m in is_in[:, j]], seed=int(seed * 1000 + j))
        for j in range(k)
    ]


def train_references(split: str | Path, config: str, k: int, out: str | Path, seed: int = 0, overrides: list[str] = ()) -> list[Path]:
    """Fit K reference targets with `lab.fit` (same config as the target) on the pool's halves."""
    from lab import fit

    if k < 4:
        raise LabError(f"lira needs at least 4 references (each example in 2 and out of 2), got {k}")
    runs = []
    for j, ref in enumerate(reference_splits(MembershipSplit.load(split), k, seed)):
        run = Path(out) / f"ref_{j:02d}"
        run.mkdir(parents=True, exist_ok=True)
        ref.save(run / "reference_split.json")
        fit.main(["--config", str(config), "--trainer.default_root_dir", str(run), "--seed_everything", str(seed + j + 1),
                  "--data.split_file", str(run / "reference_split.json"), *overrides])
        runs.append(run)
    return runs


def reference_exports(references: str | Path, epoch: int | None) -> list[Path]:
    """One export per reference run: the one at `epoch` if it has it, else its last."""
    from lab.targets.load import target_folders

    root = Path(references)
    runs = sorted(p for p in root.glob("ref_*") if p.is_dir()) if root.is_dir() else []
    if not runs:
        raise LabError(f"lira: no reference runs (ref_*/) in {references}; train them with scripts/train_references.py")
    chosen = []
    for run in runs:
        exports = target_folders(run)
        match = [e for e in exports if e.name == f"epoch_{epoch:04d}"] if epoch is not None else []
        chosen.append(match[0] if match else exports[-1])
    return chosen


class LiRA(LossAttack):
    pixel_input = True  # each model (target, references) encodes with its own autoencoder

    def __init__(self, references: str = "references", timesteps: list[int] = (100,), num_noise: int = 4, seed: int = 0):
        super().__init__(timesteps=timesteps, num_noise=num_noise, seed=seed)
        self.save_hyperparameters()
        self.references = references

    def bind(self, target) -> "LiRA":
        from lab.targets.load import load_target

        super().bind(target)
        refs = [load_target(p) for p in reference_exports(self.references, target.epoch)]
        self.models = [(self.unet, self.autoencoder)] + [(r.unet, r.autoencoder) for r in refs]
        ids = target.split.ids
        # is_in[m, row]: was example `row` of the target's split a member of reference m?
        self.is_in = torch.zeros(len(refs), len(ids), dtype=torch.bool)
        for m, ref in enumerate(refs):
            role = dict(zip(ref.split.ids, ref.split.roles))
            missing = [i for i in ids if i not in role]
            if missing:
                raise LabError(f"lira: reference {ref.path} was not trained on the target's pool (e.g. {missing[0]} is missing)")
            self.is_in[m] = torch.tensor([role[i] == "member" for i in ids])
        n_in, n_out = self.is_in.sum(0), (~self.is_in).sum(0)
        if bool((n_in >= 2).all() and (n_out >= 2).all()):
            self.online = True
        elif bool((n_out >= 2).all()):
            self.online = False
        else:
            raise LabError(f"lira: every example must be out of at least 2 of the {len(refs)} references: train more")
        self.setup_calls = 0
        return self

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
        target, refs = stats[0], torch.stack(stats[1:])  # (B,), (K, B)
        is_in = self.is_in[:, rows.cpu()].to(x0.device)
        mu_out, s_out = _masked_stats(refs, ~is_in)
        if not self.online:
            return (mu_out - target) / s_out
        mu_in, s_in = _masked_stats(refs, is_in)
        return _log_normal(target, mu_in, s_in) - _log_normal(target, mu_out, s_out)


def _masked_stats(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = mask.sum(0)
    mean = (values * mask).sum(0) / n
    var = ((values - mean).pow(2) * mask).sum(0) / (n - 1)
    return mean, var.sqrt().clamp_min(1e-4)


def _log_normal(x: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / s).pow(2) - s.log() - 0.5 * math.log(2 * math.pi)
