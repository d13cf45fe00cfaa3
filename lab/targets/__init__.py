"""LightningModules that train diffusion targets, and their export to the diffusers format."""

from lab.targets.ddpm import PixelDDPM

__all__ = ["PixelDDPM"]
