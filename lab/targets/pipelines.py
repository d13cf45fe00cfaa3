"""The diffusers pipelines a target is saved as and sampled with.

Pixel targets are `DDPMPipeline` folders (`unet/`, `scheduler/`); latent targets are
`LDMPipeline` folders (`vqvae/` holding an AutoencoderKL or VQModel, `unet/`, `scheduler/`).
Sampling is deterministic DDIM (eta = 0) on the target's own noise schedule.
"""

from __future__ import annotations

import numpy as np
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, LDMPipeline


def sampling_pipeline(unet, scheduler, autoencoder=None):
    """A DDIM sampler for the target: `DDIMPipeline` on pixels, `LDMPipeline` on latents."""
    ddim = DDIMScheduler.from_config(scheduler.config)
    pipe = (
        DDIMPipeline(unet=unet, scheduler=ddim)
        if autoencoder is None
        else LDMPipeline(vqvae=autoencoder, unet=unet, scheduler=ddim)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def export_pipeline(unet, scheduler, autoencoder=None):
    """What `save_pretrained` writes: a `DDPMPipeline`, or an `LDMPipeline` with a DDIM scheduler."""
    if autoencoder is None:
        return DDPMPipeline(unet=unet, scheduler=scheduler)
    return LDMPipeline(vqvae=autoencoder, unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))


def ddim_images(pipe, num_images: int, steps: int, generator) -> np.ndarray:
    """`num_images` samples as NHWC floats in [0, 1] (both pipelines decode to this)."""
    return pipe(batch_size=num_images, generator=generator, num_inference_steps=steps, output_type="np").images
