"""LightningModules that train diffusion targets, and their export to the diffusers format."""

from lab.targets.autoencoder import AutoencoderStage
from lab.targets.ddpm import PixelDDPM
from lab.targets.ldm import LatentDiffusion
from lab.targets.lora import LoRA
from lab.targets.text2image import TextToImage
from lab.targets.text2image_xl import TextToImageXL

__all__ = ["AutoencoderStage", "LatentDiffusion", "LoRA", "PixelDDPM", "TextToImage", "TextToImageXL"]
