"""Latent-diffusion target (Rombach et al. 2022): an autoencoder, then a DDPM on its latents.

    z0 = s * E(x0)   (frozen autoencoder: posterior mean or pre-quantisation code, `autoencoder.encode`)
    L(theta) = E_{x0 ~ members, t, e} || e_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) e, t) - e ||^2

Stage 1 (`lab.targets.autoencoder`) trains the autoencoder on the members in its own Lightning
run when the fit starts, and saves it to `<default_root_dir>/autoencoder/` (a rerun or a resumed
fit loads it from there); or it is loaded from a pretrained folder. Stage 2 is `PixelDDPM`'s
training on latents: the same epochs, exports, EMA, DP-SGD (which then covers the UNet only; the
privacy record says so when the autoencoder saw the members) and TensorBoard logs. Exports are
`LDMPipeline` folders, so a plain diffusers pipeline samples from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lab.errors import LabError
from lab.targets.autoencoder import (
    STAGE_META,
    AutoencoderStage,
    downsampling,
    latent_channels,
    load_autoencoder,
    train_autoencoder,
)
from lab.targets.ddpm import PixelDDPM
from lab.targets.dp import DPSGD
from lab.targets.lora import LoRA


class LatentDiffusion(PixelDDPM):
    """A latent DDPM; arguments as `PixelDDPM`, plus `autoencoder` (`AutoencoderStage`).

    `image_size` and `channels` are the images' (linked from the data); the UNet's input is the
    latent: `latent_channels` x (image_size / 2^(autoencoder levels - 1)).
    """

    clip_sample = False  # latents are not bounded to [-1, 1]

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        autoencoder: AutoencoderStage | None = None,
        block_out_channels: tuple[int, ...] = (64, 64),
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
        # fine-tuning a pipeline folder: its autoencoder comes with it
        self.autoencoder_stage = (
            AutoencoderStage(pretrained=pretrained) if pretrained else (autoencoder or AutoencoderStage())
        )
        self.autoencoder_record: dict | None = None
        self._latents: dict[int, torch.Tensor] = {}  # split row -> latent, filled as members are seen
        super().__init__(
            image_size=image_size,
            channels=channels,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            attention=attention,
            norm_num_groups=norm_num_groups,
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            ema_decay=ema_decay,
            dp=dp,
            pretrained=pretrained,
            lora=lora,
            prediction_type=prediction_type,
        )

    family_name = "latent"

    def export_scheduler(self):
        """DDIM on the training schedule (what `LDMPipeline` samples with), or the base model's own."""
        from diffusers import DDIMScheduler

        if self.base_scheduler is not None:
            return self.base_scheduler
        return DDIMScheduler.from_config(self.scheduler.config)

    def denoiser_input(self) -> tuple[int, int]:
        """Build (or load) the autoencoder; the UNet denoises its latents."""
        channels, size = self.hparams.channels, self.hparams.image_size
        self.autoencoder = self.autoencoder_stage.build(channels, size).eval().requires_grad_(False)
        if self.autoencoder.config.in_channels != channels:
            raise LabError(
                f"the autoencoder takes {self.autoencoder.config.in_channels}-channel images "
                f"but the data has {channels}"
            )
        factor = downsampling(self.autoencoder)
        if size % factor:
            raise LabError(f"image_size {size} is not divisible by the autoencoder's downsampling factor {factor}")
        return latent_channels(self.autoencoder), size // factor

    @property
    def first_stage(self):
        return self.autoencoder

    def train(self, mode: bool = True):
        """The autoencoder stays frozen in eval mode while the UNet trains."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The latents by the family's convention (s * E(x0), as attacks see them), encoded once per member:
        the autoencoder is frozen and E deterministic (encoding every step was ~40% of a training step
        of the study's latent target)."""
        todo = [i for i, r in enumerate(rows.tolist()) if r not in self._latents]
        if todo:
            for i, z in zip(todo, self.family.to_latent(self.autoencoder, x0[todo])):
                self._latents[int(rows[i])] = z
        return torch.stack([self._latents[r] for r in rows.tolist()])

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.autoencoder_stage.pretrained or self.autoencoder_record is not None:
            return
        out = Path(self.trainer.default_root_dir) / "autoencoder"
        split_hash = self.trainer.datamodule.split.content_hash
        if (out / STAGE_META).is_file():
            record = json.loads((out / STAGE_META).read_text())
            if record.get("split_hash") != split_hash:
                raise LabError(
                    f"{out} holds an autoencoder trained on another membership split: "
                    "use another default_root_dir or remove it"
                )
            self.autoencoder = load_autoencoder(out).eval().requires_grad_(False)
        else:
            if self.trainer.world_size > 1:
                raise LabError(
                    "train the autoencoder in one process first (lab.fit with --trainer.max_epochs 0 trains only it) "
                    "or set model.autoencoder.pretrained, then fit on several"
                )
            outer = self.trainer.logger
            logger = (
                TensorBoardLogger(outer.log_dir, name="autoencoder", version="")
                if isinstance(outer, TensorBoardLogger)
                else False
            )
            accelerator = "gpu" if self.trainer.strategy.root_device.type == "cuda" else "cpu"
            record = train_autoencoder(
                autoencoder=self.autoencoder.requires_grad_(True),
                stage=self.autoencoder_stage,
                datamodule=self.trainer.datamodule,
                out=out,
                accelerator=accelerator,
                logger=logger,
            )
            self.autoencoder.eval().requires_grad_(False)
        self.autoencoder_record = record
        self._latents = {}  # the autoencoder may have changed

    def export_meta(self) -> dict:
        meta = super().export_meta()
        if self.autoencoder_record is not None:
            meta["autoencoder"] = self.autoencoder_record
            if "privacy" in meta:
                meta["privacy"]["scope"] = "UNet only: the autoencoder was trained on the members without DP"
        elif self.autoencoder_stage.pretrained:
            meta["autoencoder"] = {"pretrained": self.autoencoder_stage.pretrained}
        return meta
