"""LightningModules that train diffusion targets, and their export to the diffusers format."""

from lab.targets.autoencoder import AutoencoderStage
from lab.targets.ddpm import PixelDDPM
from lab.targets.ldm import LatentDiffusion

__all__ = ["AutoencoderStage", "LatentDiffusion", "PixelDDPM"]
