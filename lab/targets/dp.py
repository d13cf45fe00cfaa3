"""DP-SGD for training targets, with Opacus (Abadi et al. 2016).

Each step draws a Poisson sample of members (each independently with rate q), clips every
example's gradient to norm C, sums, adds N(0, sigma^2 C^2 I) and divides by the expected batch
size. The accountant turns (sigma, q, steps) into epsilon at delta.

With `timesteps_per_example = K`, each example's loss is averaged over K independent
(timestep, noise) draws *before* its gradient is clipped (augmentation multiplicity, as DP
diffusion training does): the K rows of one example count as one example for privacy.

Lightning wiring (see ATTACKS-AND-PITFALLS): the module calls `PrivateTraining.attach` from
`configure_optimizers`; Poisson sampling is done by the data module's own loader (Lightning
ignores the loader `make_private` returns); the model is not wrapped (Opacus hooks only), so
checkpoints and exports keep their plain keys.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator

from lab.errors import LabError

# Opacus' "hooks" mode gives wrong per-example gradients for the second ResNet of diffusers'
# UNet2DModel mid-block (checked against one-example-at-a-time autograd in scripts/bench_dp.py);
# "ew" and "ghost" fail on it. Only "functorch" is both right and supported.
GRAD_SAMPLE_MODES = ("functorch",)
NOISE_CEILING = 1e4  # a target epsilon that needs more noise than this is refused as unreachable


@dataclass
class DPSGD:
    """DP-SGD settings (set `noise_multiplier` or `target_epsilon`, not both).

    Args:
        enabled: train with DP-SGD.
        noise_multiplier: sigma, the noise std relative to max_grad_norm.
        target_epsilon: pick sigma so that epsilon reaches this after `trainer.max_epochs`.
        delta: the delta of (epsilon, delta)-DP; None means 1 / (10 * members).
        max_grad_norm: C, the per-example clipping norm.
        timesteps_per_example: K (timestep, noise) draws averaged inside each example's gradient.
        grad_sample_mode: how Opacus gets per-example gradients (only 'functorch' is right for UNets).
        accountant: Opacus accountant: 'prv', 'rdp' or 'gdp'.
    """

    enabled: bool = False
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    timesteps_per_example: int = 1
    grad_sample_mode: str = "functorch"
    accountant: str = "prv"

    def check(self) -> None:
        if not self.enabled:
            return
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise LabError("DP-SGD needs exactly one of dp.noise_multiplier and dp.target_epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise LabError(f"dp.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise LabError(f"dp.target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise LabError(f"dp.delta must be in (0, 1), got {self.delta}")
        if self.max_grad_norm <= 0:
            raise LabError(f"dp.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.timesteps_per_example < 1:
            raise LabError(f"dp.timesteps_per_example must be >= 1, got {self.timesteps_per_example}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise LabError(
                f"dp.grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}"
                " ('hooks' gives wrong per-example gradients on diffusers UNets; see scripts/bench_dp.py)"
            )
        if self.accountant not in ("prv", "rdp", "gdp"):
            raise LabError(f"dp.accountant must be 'prv', 'rdp' or 'gdp', got {self.accountant!r}")


def unsupported_modules(module: torch.nn.Module) -> list[str]:
    """'name (Type): reason' for every trainable submodule Opacus cannot make private."""
    found = []
    for name, sub in module.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        if validator is not None and any(p.requires_grad for p in sub.parameters(recurse=False)):
            found += [f"{name or type(module).__name__} ({type(sub).__name__}): {err}" for err in validator(sub)]
    return found


class PrivateTraining:
    """The privacy engine of one DP fit: attaches Opacus and reports the budget spent."""

    def __init__(self, settings: DPSGD):
        settings.check()
        self.settings = settings
        self.engine = PrivacyEngine(accountant=settings.accountant)
        self.noise_multiplier: float | None = settings.noise_multiplier
        self.sample_rate: float | None = None
        self.delta: float | None = settings.delta
        self.optimizer = None
        self._grad_params: list[torch.nn.Parameter] = []

    def attach(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer, datamodule):
        """Make `module` and `optimizer` private; returns the DP optimizer for Lightning."""
        s = self.settings
        if trainer.world_size > 1:
            raise LabError(
                "DP-SGD runs on one device here (Opacus is not wired into Lightning's DDP): set trainer.devices 1"
            )
        if trainer.accumulate_grad_batches != 1:
            raise LabError(
                "DP-SGD cannot use trainer.accumulate_grad_batches: accumulated Poisson batches break the accounting"
            )
        if trainer.gradient_clip_val:
            raise LabError(
                "DP-SGD clips per example (dp.max_grad_norm): unset trainer.gradient_clip_val, "
                "which would break the accounting"
            )
        if not hasattr(datamodule, "use_poisson_sampling"):
            raise LabError("DP-SGD needs a data module with Poisson sampling (lab.data.MembershipDataModule)")
        bad = unsupported_modules(module)
        if bad:
            raise LabError("Opacus cannot make these modules private: " + "; ".join(bad))
        loader = datamodule.use_poisson_sampling()
        members = len(loader.dataset)
        self.sample_rate = 1 / len(loader)
        if self.delta is None:
            self.delta = 1 / (10 * members)
        if self.delta >= 1 / members:
            raise LabError(f"dp.delta {self.delta:g} must be below 1/members = {1 / members:g}")
        if self.noise_multiplier is None:
            self.noise_multiplier = self._noise_for_target_epsilon(trainer.max_epochs)
        self._grad_params = [p for p in module.parameters() if p.requires_grad]
        try:
            with (
                warnings.catch_warnings()
            ):  # Opacus' "Secure RNG turned off": the lab's DP is for measurement (README)
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
                _, self.optimizer, _ = self.engine.make_private(
                    module=module,
                    optimizer=optimizer,
                    data_loader=loader,
                    noise_multiplier=self.noise_multiplier,
                    max_grad_norm=s.max_grad_norm,
                    poisson_sampling=True,
                    grad_sample_mode=s.grad_sample_mode,
                    wrap_model=False,
                )
        except (NotImplementedError, ValueError) as e:
            raise LabError(f"Opacus cannot make {type(module).__name__} private: {e}") from None
        return self.optimizer

    def _noise_for_target_epsilon(self, epochs: int | None) -> float:
        """Opacus' search for sigma, after one cheap check that the target is reachable at all."""
        s = self.settings
        if epochs is None or epochs < 1:
            raise LabError("dp.target_epsilon needs trainer.max_epochs (the planned epochs) to be set")
        steps = int(epochs / self.sample_rate)
        floor = create_accountant(s.accountant)
        floor.history = [(NOISE_CEILING, self.sample_rate, steps)]
        best = floor.get_epsilon(self.delta)
        if best > s.target_epsilon:
            raise LabError(
                f"dp.target_epsilon {s.target_epsilon} is unreachable in {epochs} epochs at sample rate "
                f"{self.sample_rate:.4g} and delta {self.delta:g}: even noise multiplier {NOISE_CEILING:g} "
                f"gives epsilon {best:.4g}. Raise it, or train fewer epochs"
            )
        return get_noise_multiplier(
            target_epsilon=s.target_epsilon,
            target_delta=self.delta,
            sample_rate=self.sample_rate,
            steps=steps,
            accountant=s.accountant,
        )

    def reduce_multiplicity(self, batch_size: int) -> None:
        """Average each example's K per-row gradients into one, before the optimizer clips it.

        An empty Poisson batch still takes a (pure-noise) step: its per-example gradients are
        set to an empty tensor, which Opacus clips and noises like any other batch.
        """
        k = self.settings.timesteps_per_example
        for p in self._grad_params:
            gs = getattr(p, "grad_sample", None)
            if batch_size == 0 or gs is None:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            elif k > 1:
                p.grad_sample = gs.reshape(batch_size, k, *p.shape).mean(1)

    def epsilon(self) -> float:
        return float(self.engine.get_epsilon(self.delta)) if self.engine.accountant.history else 0.0

    def report(self) -> dict:
        """What a DP checkpoint records about its guarantee."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.settings.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": sum(steps for _, _, steps in self.engine.accountant.history),
            "settings": asdict(self.settings),
        }

    def state_dict(self) -> dict:
        return {
            "accountant": self.engine.accountant.state_dict(),
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume the accountant's history, so epsilon keeps counting across restarts."""
        self.engine.accountant.load_state_dict(state["accountant"])
        self.noise_multiplier, self.delta = state["noise_multiplier"], state["delta"]
