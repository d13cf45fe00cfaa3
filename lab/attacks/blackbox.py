"""Black-box attack: only images the target generated (data-forensics-2302.07801).

The attacker sees nothing of the model but its samples (images: a latent target's are decoded).
It draws N samples with the target's own sampler (seeded DDIM, cached beside the target as
safetensors) and scores an example by how close the nearest one comes to it; a model that
memorised its members regenerates them:

    S = {s_1 .. s_N} ~ target,      score(x0) = - min_j || x0 - s_j ||_2

Cost: N x steps denoiser calls once per target (the cache makes later runs free; reported as
setup calls), none per example.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab.attacks.base import Attack
from lab.errors import LabError
from lab.targets.families import ddim_images

CACHE_DIR = ".lab_cache"


class BlackBox(Attack):
    conditional_ok = False
    unconditional_only = "it compares with unconditional samples, and a text-to-image target samples from prompts"
    pixel_input = True

    def __init__(self, num_samples: int = 1000, steps: int = 50, batch_size: int = 250, seed: int = 0):
        super().__init__(seed)
        self.save_hyperparameters()
        if num_samples < 1 or steps < 1 or batch_size < 1:
            raise LabError("blackbox needs num_samples, steps and batch_size >= 1")
        self.samples = None

    def cache_path(self, target) -> Path | None:
        if target.path is None or not Path(target.path).is_dir():
            return None
        h = self.hparams
        return Path(target.path) / CACHE_DIR / f"blackbox_n{h.num_samples}_s{h.steps}_seed{h.seed}.safetensors"

    def bind(self, target, condition: str = "caption") -> "BlackBox":
        """Generate (or load) the target's samples; keep only them, not the model."""
        super().bind(target, condition)
        path = self.cache_path(target)
        if path is not None and path.is_file():
            try:
                self.samples = load_file(path)["samples"]  # safetensors: data only, never code
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise LabError(
                    f"blackbox: the sample cache {path} is not a valid safetensors file ({e}); delete it to regenerate"
                ) from None
        else:
            self.samples = self.generate(target)
            self.setup_calls = self.hparams.num_samples * self.hparams.steps
            if path is not None:
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_suffix(".tmp")
                save_file({"samples": self.samples.contiguous()}, tmp)
                tmp.replace(path)
        self.unet = self.autoencoder = None  # the attack itself never touches the model
        return self

    @torch.inference_mode()
    def cost(self) -> tuple[int, int]:
        return 0, 0  # only generated samples: their calls are setup calls, once per target

    def generate(self, target) -> torch.Tensor:
        h = self.hparams
        pipe = target.family.sampler(target)
        generator = torch.Generator().manual_seed(h.seed)
        chunks = []
        for start in range(0, h.num_samples, h.batch_size):
            images = ddim_images(pipe, min(h.batch_size, h.num_samples - start), h.steps, generator)
            chunks.append(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1)  # [0, 1] NHWC -> [-1, 1] NCHW
        return torch.cat(chunks)

    def score(self, x0, rows):
        samples = self.samples.to(x0.device, x0.dtype).flatten(1)
        return -torch.cdist(x0.flatten(1), samples).min(1).values
