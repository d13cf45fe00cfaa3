"""Pixel-space DDPM/DDIM: `DDPMPipeline` / `DDIMPipeline` folders (`unet/` holding a `UNet2DModel`,
`scheduler/`), or the flat single-model layout of early Hub repositories such as google/ddpm-cifar10-32
(`config.json`, `scheduler_config.json` and the weights at the folder's root).

    out = unet(x_t, t).sample          images in [-1, 1]; no conditioning, no autoencoder
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.errors import LabError
from lab.targets.families.base import Family


def is_flat(path: Path) -> bool:
    """A single-model folder: config.json at its root names a UNet2DModel (no unet/ subfolder)."""
    if (path / "unet").is_dir() or not (path / "config.json").is_file():
        return False
    try:
        return json.loads((path / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


class PixelFamily(Family):
    name = "pixel"
    pipelines = ("DDPMPipeline", "DDIMPipeline")

    @classmethod
    def claims(cls, target) -> bool:
        return target.autoencoder is None and target.text_encoder is None

    def load(self, path: Path, index: dict, options: dict):
        if not is_flat(path):
            return super().load(path, index, options)
        from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

        if not (path / "scheduler_config.json").is_file():
            raise LabError(f"{path}: a flat model folder needs scheduler_config.json beside config.json")
        variant = {k: v for k, v in options.items() if k == "variant"}
        unet = UNet2DModel.from_pretrained(path, low_cpu_mem_usage=False, local_files_only=True, **variant)
        return DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_pretrained(path, local_files_only=True))

    def target(self, pipe, path=None, meta=None):
        from diffusers import UNet2DModel

        where = path or type(pipe).__name__
        unet, scheduler = getattr(pipe, "unet", None), getattr(pipe, "scheduler", None)
        self.check_denoiser(unet, UNet2DModel, where, type(pipe).__name__)
        self.check_scheduler(scheduler, where)
        return self.make_target(path, meta, unet, scheduler)

    def pipeline(self, unet, scheduler, **_):
        from diffusers import DDPMPipeline

        return DDPMPipeline(unet=unet, scheduler=scheduler)

    def sampler(self, target):
        from diffusers import DDIMPipeline, DDIMScheduler

        pipe = DDIMPipeline(unet=target.unet, scheduler=DDIMScheduler.from_config(target.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        return pipe
