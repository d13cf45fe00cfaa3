"""Latent diffusion without text: `LDMPipeline` folders (`vqvae/` holding an AutoencoderKL or VQModel,
`unet/` a `UNet2DModel`, `scheduler/`), as CompVis/ldm-celebahq-256 or the lab's latent targets.

    z = s E(x),   out = unet(z_t, t).sample,   x = D(z / s)

with s the autoencoder config's `scaling_factor`, as `LDMPipeline` decodes. CompVis' LDMs were
trained on unscaled latents and their vqvae config states no scale; diffusers' class default (0.18215)
would then shrink every latent the UNet sees (diffusers issue #6725), so an unstated scale loads as 1.0.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.errors import LabError
from lab.targets.families.base import Family


def stated_scaling_factor(folder: Path) -> bool:
    """True where the autoencoder's config.json states its latent scale."""
    try:
        return "scaling_factor" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return True  # unreadable configs are reported by the loader itself


def check_autoencoder(autoencoder, unet, where) -> None:
    from diffusers import AutoencoderKL, VQModel

    from lab.targets.autoencoder import latent_channels

    if not isinstance(autoencoder, (AutoencoderKL, VQModel)):
        raise LabError(
            f"{where}: the autoencoder is a {type(autoencoder).__name__}; supported: AutoencoderKL, VQModel"
        )
    if unet.config.in_channels != latent_channels(autoencoder):
        raise LabError(
            f"{where}: the UNet takes {unet.config.in_channels}-channel inputs but the autoencoder makes "
            f"{latent_channels(autoencoder)}-channel latents"
        )


class LatentFamily(Family):
    name = "latent"
    pipelines = ("LDMPipeline",)

    @classmethod
    def claims(cls, target) -> bool:
        return target.autoencoder is not None and target.text_encoder is None

    def load(self, path: Path, index: dict, options: dict):
        pipe = super().load(path, index, options)
        if not stated_scaling_factor(path / "vqvae"):
            pipe.vqvae.register_to_config(scaling_factor=1.0)
        return pipe

    def target(self, pipe, path=None, meta=None):
        from diffusers import UNet2DModel

        where = path or type(pipe).__name__
        unet, scheduler, autoencoder = (getattr(pipe, k, None) for k in ("unet", "scheduler", "vqvae"))
        self.check_denoiser(unet, UNet2DModel, where, type(pipe).__name__)
        self.check_scheduler(scheduler, where)
        check_autoencoder(autoencoder, unet, where)
        return self.make_target(path, meta, unet, scheduler, autoencoder=autoencoder)

    def pipeline(self, unet, scheduler, autoencoder, **_):
        from diffusers import LDMPipeline

        return LDMPipeline(vqvae=autoencoder, unet=unet, scheduler=scheduler)

    def sampler(self, target):
        from diffusers import DDIMScheduler

        pipe = self.pipeline(target.unet, DDIMScheduler.from_config(target.scheduler.config), target.autoencoder)
        pipe.set_progress_bar_config(disable=True)
        return pipe
