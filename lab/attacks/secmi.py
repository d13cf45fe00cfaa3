"""SecMI: step-wise error comparing membership inference (Duan et al. 2023; in copymark-2410.03640).

Deterministic DDIM inversion of x0 with interval k up to t_sec - k, then one step up to t_sec
and one DDIM step back down:

    x~       = Phi(x0; 0 -> k -> ... -> t_sec - k)            (t_sec/k - 1 calls)
    x~_recon = Psi(Phi(x~; t_sec - k -> t_sec); t_sec -> t_sec - k)   (2 calls)
    t-error  = || x~ - x~_recon ||^2

Members are reconstructed more faithfully, so secmi_stat scores -t-error. secmi_nn trains a
small CNN on the |x~ - x~_recon| maps of the validation split and scores the test split.
Defaults t_sec = 100, k = 10 as in the paper and jinhaoduan/SecMI: 11 denoiser calls per example.

secmi_nn departs from the authors' classifier on purpose: they train a ResNet-18 (MSE on 0/1
labels, SGD, 15 epochs) on 20% of thousands of examples; a validation split here has tens of
rows, on which that under-fits (the old 2-conv, 100-step version scored its own training data
at AUC 0.37). Here: maps scaled by their global std, log-compressed, a 3-conv CNN with average
and max pooling, full-batch Adam on binary cross-entropy until the training loss stops falling
(at most `epochs` steps). Cross-fitting (`LearnedAttack.finalize`) keeps its scores honest.
"""

from __future__ import annotations

import torch
from torch import nn

from lab.attacks.base import Attack, LearnedAttack
from lab.errors import LabError


class _SecMI:
    def _init_secmi(self, t_sec: int, interval: int) -> None:
        if interval < 1 or t_sec < interval or t_sec % interval:
            raise LabError(f"secmi: t_sec ({t_sec}) must be a positive multiple of interval ({interval})")
        self.t_sec, self.interval = int(t_sec), int(interval)

    def check_timesteps(self) -> None:
        self.check_range([self.t_sec], "t_sec")

    def cost(self) -> tuple[int, int]:
        return self.t_sec // self.interval + 1, 0  # t_sec/k - 1 inversion steps, then 2

    def error_maps(self, x0: torch.Tensor) -> torch.Tensor:
        """x~ - x~_recon for each example."""
        x, k = x0, self.interval
        for t in range(0, self.t_sec - k, k):
            x = self.ddim_step(x, t, t + k, self.eps(x, t))
        x_tilde, t_low = x, self.t_sec - k
        x_up = self.ddim_step(x_tilde, t_low, self.t_sec, self.eps(x_tilde, t_low))
        x_recon = self.ddim_step(x_up, self.t_sec, t_low, self.eps(x_up, self.t_sec))
        return x_tilde - x_recon


class SecMIStat(_SecMI, Attack):
    def __init__(self, t_sec: int = 100, interval: int = 10, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self._init_secmi(t_sec, interval)

    def score(self, x0, rows):
        return -self.error_maps(x0).pow(2).flatten(1).sum(1)


class SecMINN(_SecMI, LearnedAttack):
    """The NN variant: a small CNN on |x~ - x~_recon| maps, trained on the validation split."""

    def __init__(self, t_sec: int = 100, interval: int = 10, epochs: int = 300, lr: float = 3e-3, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        self._init_secmi(t_sec, interval)
        self.epochs, self.lr = epochs, lr
        self.classifier = None

    def features(self, x0, rows):
        return self.error_maps(x0).abs()

    def _new_classifier(self, channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            _AvgMaxPool(),
            nn.Linear(64, 1),
        )

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log1p(features.float() / self.scale)

    def fit(self, features: torch.Tensor, is_member: torch.Tensor) -> None:
        """Full-batch Adam on binary cross-entropy until the loss stops falling (or `epochs` steps)."""
        with torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(self.seed)
            self.scale = features.float().std().clamp_min(1e-12).item()
            x, y = self._inputs(features).clone(), is_member.float().clone()
            self.classifier = self._new_classifier(x.shape[1])
            opt = torch.optim.Adam(self.classifier.parameters(), lr=self.lr)
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(self.classifier(x).squeeze(1), y)
                if loss.item() < 1e-3:
                    break
                loss.backward()
                opt.step()
            self.classifier.eval()

    def decision(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(self._inputs(features)).squeeze(1)


class _AvgMaxPool(nn.Module):
    """Global average and max pooling side by side: (B, C, H, W) -> (B, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
