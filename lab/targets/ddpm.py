"""Pixel-space DDPM target: a diffusers UNet2DModel trained with the epsilon (or v, or x0) objective.

    L(theta) = E_{x0 ~ members, t ~ U{0..T-1}, e ~ N(0, I)}
                   || f_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) e, t) - y ||^2

with y = e (`prediction_type: epsilon`, the default), v = sqrt(abar_t) e - sqrt(1 - abar_t) x0
(`v_prediction`) or x0 (`sample`); the exported scheduler records which.

What an attack needs is exported with `save_pretrained` in the `DDPMPipeline` layout
(`unet/`, `scheduler/`, `model_index.json`), so a plain diffusers pipeline can sample from it.
With `ema_decay` set, an exponential moving average of the weights is kept (torch's
AveragedModel) and is what gets exported and sampled: it is the model one would release.
With `dp.enabled`, training is DP-SGD (`lab.targets.dp`); the EMA of DP weights is
post-processing, so it keeps the guarantee.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lab.errors import LabError, check_number
from lab.targets.dp import DPSGD, PrivateTraining
from lab.targets.families import PREDICTION_TYPES, ddim_images, family
from lab.targets.lora import LoRA, merged
from lab.targets.target import Target


def rng_states() -> dict:
    """torch, numpy and python random states as tensors and plain lists (what `weights_only` loads).

    Noise, timesteps, Poisson sampling and shuffling all draw from these global generators, so a run
    resumed from an epoch-end checkpoint continues exactly as the uninterrupted run."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(state), "gauss": py_gauss},
        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
    }


def set_rng_states(states: dict) -> None:
    try:
        torch.set_rng_state(states["torch"])
        n = states["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = states["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise LabError(f"the checkpoint's random states are damaged ({type(e).__name__}: {e})") from None


class PixelDDPM(pl.LightningModule):
    """DDPM on images in [-1, 1].

    Args:
        image_size, channels: input shape (linked from the data module by `lab.fit`).
        block_out_channels: UNet widths, one per resolution level (each level halves the size).
        layers_per_block: ResNet blocks per level.
        attention: add self-attention at the lowest resolution.
        norm_num_groups: GroupNorm groups (must divide every width).
        num_train_timesteps, beta_schedule: the DDPMScheduler's noise schedule.
        lr, weight_decay, warmup_steps: AdamW with a linear warm-up.
        ema_decay: keep and export an EMA of the weights (None: export the raw weights).
        dp: DP-SGD settings (`lab.targets.dp.DPSGD`); None or `enabled: false` trains without.
        pretrained: fine-tune a local diffusers pipeline folder instead of training from scratch (its UNet
            and noise schedule; the width, level and schedule arguments above are then ignored).
        lora: train LoRA adapters (`lab.targets.lora.LoRA`, with peft, as diffusers' LoRA training does)
            instead of every weight; exports have the adapters merged in.
        prediction_type: what the UNet learns to predict from x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e:
            `epsilon` (e), `v_prediction` (v = sqrt(abar_t) e - sqrt(1 - abar_t) x0, as SD 2.x) or `sample`
            (x0); the loss is the squared error against it, and the exported scheduler says which. None:
            epsilon, or the pretrained folder's own when fine-tuning (a different one is refused).
    """

    clip_sample = True  # samplers clip predicted x0 to the data range [-1, 1]

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        attention: bool = False,
        norm_num_groups: int = 8,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float | None = None,
        dp: DPSGD | None = None,
        pretrained: str | None = None,
        lora: LoRA | None = None,
        prediction_type: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if pretrained is not None:
            check_pretrained(pretrained, self.pretrained_pipelines)
        elif lora is not None:
            raise LabError("model.lora adapts a pretrained UNet: set model.pretrained to a local pipeline folder")
        check_number("model.image_size", image_size, minimum=1, integer=True)
        check_number("model.layers_per_block", layers_per_block, minimum=1, integer=True)
        check_number("model.norm_num_groups", norm_num_groups, minimum=1, integer=True)
        check_number("model.num_train_timesteps", num_train_timesteps, minimum=2, integer=True)
        check_number("model.lr", lr, above=0)
        check_number("model.weight_decay", weight_decay, minimum=0)
        check_number("model.warmup_steps", warmup_steps, minimum=0, integer=True)
        if not block_out_channels or any(not isinstance(c, int) or c < 1 for c in block_out_channels):
            raise LabError(f"model.block_out_channels must be positive integers, got {block_out_channels!r}")
        self.dp = dp if dp is not None and dp.enabled else None
        if self.dp is not None:
            self.dp.check()
        self.private: PrivateTraining | None = None
        self._private_state: dict | None = None
        self._batch_rows = 0
        unet_channels, unet_size = self.denoiser_input()
        levels = len(block_out_channels)
        if pretrained is None and unet_size % 2 ** (levels - 1):
            what = "image_size" if self.first_stage is None else "the latent size"
            raise LabError(f"{what} {unet_size} must be divisible by 2^{levels - 1} for {levels} UNet levels")
        if pretrained is None and any(c % norm_num_groups for c in block_out_channels):
            raise LabError(
                f"norm_num_groups {norm_num_groups} must divide every width in block_out_channels {block_out_channels}"
            )
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise LabError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
            raise LabError(
                f"model.prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}"
            )
        self.base_scheduler = None  # fine-tuning: the base model's own scheduler, which exports keep
        if pretrained is not None:
            self.unet, self.scheduler, self.base_scheduler = load_pretrained_unet(
                pretrained, self.clip_sample, (unet_channels, unet_size), prediction_type
            )
            where, kind = f"model.pretrained {pretrained}", " or ".join(self.family.pipelines)
            self.family.check_denoiser(self.unet, type(self.unet), where, kind)  # what its family's call feeds it
            self.family.check_scheduler(self.base_scheduler, where)  # the scheduler exports keep
        else:
            self.unet = self.build_unet(unet_size, unet_channels)
            try:
                self.scheduler = DDPMScheduler(
                    num_train_timesteps=num_train_timesteps,
                    beta_schedule=beta_schedule,
                    clip_sample=self.clip_sample,
                    prediction_type=prediction_type or "epsilon",
                )
            except NotImplementedError as e:
                raise LabError(f"unknown beta_schedule {beta_schedule!r}: {e}") from None
        if lora is not None:
            lora.attach(self.unet)
        self.ema = AveragedModel(self.unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None

    family_name = "pixel"  # the adapter (`lab.targets.families`) that calls, exports and samples this target

    @property
    def pretrained_pipelines(self) -> tuple[str, ...]:
        return self.family.pipelines

    @property
    def family(self):
        if getattr(self, "_family", None) is None:
            self._family = family(self.family_name)
        return self._family

    def build_unet(self, size: int, channels: int):
        """The denoiser: a `UNet2DModel` (self-attention at the lowest resolution with `attention`)."""
        h = self.hparams
        levels = len(h.block_out_channels)
        down, up = ["DownBlock2D"] * levels, ["UpBlock2D"] * levels
        if h.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        return UNet2DModel(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(h.block_out_channels),
            layers_per_block=h.layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=h.norm_num_groups,
        )

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """f_theta(x_t, t) of the UNet being trained, called by the family's adapter (text-to-image targets also
        take the prompt context)."""
        return self.family.denoise(self.unet, x_t, t, context)

    def condition(self, rows: torch.Tensor) -> torch.Tensor | None:
        """What the denoiser is conditioned on for these split rows during training (None: nothing)."""
        return None

    def attack_target(self, split) -> Target:
        """The model as an attack sees it (the weights an export would release), with `split`."""
        parts = {**self.parts(self.target_unet), "scheduler": self.scheduler}  # the training schedule
        return Target(**parts, split=split, split_path=None, path=None, family=self.family)

    def parts(self, unet) -> dict:
        """The components of this target with `unet` as its denoiser (what a Target and an export hold)."""
        return {"unet": unet, "scheduler": self.export_scheduler(), "autoencoder": self.first_stage}

    def export_scheduler(self):
        """The scheduler an export holds: the base model's when fine-tuning, else the training schedule."""
        return self.base_scheduler if self.base_scheduler is not None else self.scheduler

    def denoiser_input(self) -> tuple[int, int]:
        """(channels, size) of what the UNet denoises: here the images themselves."""
        return self.hparams.channels, self.hparams.image_size

    def encode(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Training images (split rows `rows`) -> what the UNet is trained on (identity for pixel targets)."""
        return x0

    @property
    def first_stage(self):
        """The autoencoder of a latent target (None: this target denoises pixels)."""
        return None

    @property
    def target_unet(self) -> UNet2DModel:
        """The weights an attacker gets: the EMA if kept, else the trained ones."""
        return self.ema.module if self.ema is not None else self.unet

    def diffusion_loss(self, x0: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        kind = self.scheduler.config.prediction_type
        target = (
            noise if kind == "epsilon" else self.scheduler.get_velocity(x0, noise, t) if kind == "v_prediction" else x0
        )
        return F.mse_loss(self.denoise(noisy, t, context), target)

    def training_step(self, batch, batch_idx):
        x0, rows = batch
        self._batch_rows = x0.shape[0]
        if x0.shape[0] == 0:  # an empty Poisson batch: DP-SGD still takes its (pure-noise) step
            return sum(p.sum() for p in self.unet.parameters()) * 0.0
        x0, context = self.encode(x0, rows), self.condition(rows)
        k = self.dp.timesteps_per_example if self.dp is not None else 1
        if k > 1:
            x0 = x0.repeat_interleave(k, dim=0)
            context = tuple(c.repeat_interleave(k, dim=0) for c in context) if context is not None else None
        loss = self.diffusion_loss(x0, context)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0])
        return loss

    def on_after_backward(self) -> None:
        if self.private is not None:
            self.private.reduce_multiplicity(self._batch_rows)

    def on_train_epoch_end(self) -> None:
        if self.private is not None:
            self.log("privacy/epsilon", self.private.epsilon(), on_epoch=True)

    def privacy_report(self) -> dict | None:
        """Epsilon, delta, noise multiplier, clipping norm and sample rate of a DP fit (else None)."""
        return self.private.report() if self.private is not None else None

    def export_meta(self) -> dict:
        """What an export's target.json records beyond epoch and hyper-parameters."""
        report = self.privacy_report()
        return {"privacy": report} if report is not None else {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.private is not None:
            checkpoint["privacy"] = {**self.private.report(), "state": self.private.state_dict()}
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._private_state = checkpoint.get("privacy", {}).get("state")
        if "rng_states" in checkpoint:  # the noise, timesteps and shuffling continue as if never stopped
            set_rng_states(checkpoint["rng_states"])

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.unet)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            [p for p in self.unet.parameters() if p.requires_grad],
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
        )
        if self.dp is not None:
            self.private = PrivateTraining(self.dp)
            if self._private_state is not None:
                self.private.load_state_dict(self._private_state)
            opt = self.private.attach(self.unet, opt, self.trainer, self.trainer.datamodule)
        warmup = self.hparams.warmup_steps
        # always a (possibly constant) schedule named "lr": LearningRateMonitor's tag is then `lr` with and
        # without DP-SGD (it would otherwise name it after the optimizer class: lr-AdamW, lr-DPOptimizer)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, (lambda step: min(1.0, (step + 1) / warmup)) if warmup else (lambda step: 1.0)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}

    def on_fit_start(self) -> None:
        if self.private is not None and len(self.trainer.optimizers) != 1:
            raise LabError("DP-SGD accounts for exactly one optimizer (the one Opacus made private)")
        dm = getattr(self.trainer, "datamodule", None)
        shape = getattr(dm, "image_shape", None)
        expected = (self.hparams.channels, self.hparams.image_size, self.hparams.image_size)
        if shape is not None and tuple(shape) != expected:
            raise LabError(f"the data gives images of shape {tuple(shape)} but the target takes {expected}")

    @torch.inference_mode()
    def sample(self, num_images: int, steps: int = 20, seed: int = 0) -> np.ndarray:
        """Deterministic DDIM samples (eta=0) from the target weights, NHWC in [0, 1]."""
        unet = self.target_unet
        was_training = unet.training
        unet.eval()
        pipe = self.family.sampler(
            Target(**self.parts(unet), split=None, split_path=None, path=None, family=self.family)
        )
        images = ddim_images(pipe, num_images, steps, torch.Generator(device="cpu").manual_seed(seed))
        unet.train(was_training)
        return images

    def released_unet(self):
        """The UNet an export holds: the target weights, with LoRA adapters merged in (a copy)."""
        return merged(self.target_unet) if self.hparams.lora is not None else self.target_unet

    def export(self, path: str | Path) -> None:
        """Save the target in its family's diffusers layout (`DDPMPipeline`, `LDMPipeline`, ...)."""
        self.family.pipeline(**self.parts(self.released_unet())).save_pretrained(str(path))


def check_pretrained(path: str, kinds: tuple[str, ...]) -> None:
    """A LabError unless `path` is a local diffusers pipeline folder of one of `kinds`."""
    from lab.targets.load import pipeline_index

    try:
        kind = pipeline_index(path).get("_class_name")
    except LabError as e:
        raise LabError(f"model.pretrained: {e}") from None
    if kind not in kinds:
        raise LabError(f"model.pretrained: {path} holds a {kind}; this target fine-tunes a {' or '.join(kinds)}")


def scheduler_class(config: dict, where):
    """The diffusers scheduler class a scheduler config names (only diffusers' own schedulers)."""
    import diffusers
    from diffusers import SchedulerMixin

    name = config.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise LabError(f"{where}: the scheduler config names {name!r}, not a diffusers scheduler")
    return cls


def load_pretrained_unet(path: str, clip_sample: bool, shape: tuple[int, int], prediction_type: str | None = None):
    """The UNet (trainable), a DDPM noise schedule with the folder's betas and the folder's own scheduler,
    from a pipeline folder (or a flat single-model folder: config.json and scheduler_config.json at its root)."""
    from diffusers import UNet2DConditionModel

    from lab.targets.families.pixel import is_flat
    from lab.targets.weights import complete_weights

    folder = Path(path)
    unet_dir, scheduler_dir = (folder, folder) if is_flat(folder) else (folder / "unet", folder / "scheduler")
    try:
        name = json.loads((unet_dir / "config.json").read_text()).get("_class_name")
        cls = {"UNet2DConditionModel": UNet2DConditionModel, "UNet2DModel": UNet2DModel}.get(name)
        if cls is None:
            raise LabError(f"model.pretrained: {unet_dir / 'config.json'} names {name!r}, not a UNet the lab trains")
        with complete_weights(f"model.pretrained {path}"):
            unet = cls.from_pretrained(unet_dir, low_cpu_mem_usage=False, local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir, local_files_only=True)
        raw = DDPMScheduler.load_config(scheduler_dir, local_files_only=True)  # the folder's own class
        base = scheduler_class(raw, f"model.pretrained {path}").from_config(raw)
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for missing/corrupt/unsafe files
        raise LabError(
            f"model.pretrained: cannot load the UNet and scheduler of {path}: {str(e).splitlines()[0]}"
        ) from None
    size = unet.config.sample_size if isinstance(unet.config.sample_size, int) else unet.config.sample_size[0]
    if (unet.config.in_channels, size) != tuple(shape):
        raise LabError(
            f"model.pretrained: the UNet of {path} takes {unet.config.in_channels} x {size} x {size} "
            f"but the data gives {shape[0]} x {shape[1]} x {shape[1]} (set data.image_size)"
        )
    own = scheduler.config.get("prediction_type", "epsilon")
    if own not in PREDICTION_TYPES:
        raise LabError(f"model.pretrained: {path} predicts {own!r}; supported: {', '.join(PREDICTION_TYPES)}")
    if prediction_type is not None and prediction_type != own:
        raise LabError(
            f"model.prediction_type {prediction_type!r} differs from the pretrained {path}'s {own!r}: fine-tuning "
            "keeps the base model's parametrisation (drop model.prediction_type)"
        )
    scheduler = DDPMScheduler.from_config({**scheduler.config, "clip_sample": clip_sample, "prediction_type": own})
    return unet.train().requires_grad_(True), scheduler, base
