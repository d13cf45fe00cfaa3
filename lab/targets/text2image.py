"""Text-to-image latent diffusion (Stable Diffusion's design, Rombach et al. 2022), tiny and local.

    z0 = s * E(x0),   c = CLIP_text(tokens(caption))          (autoencoder and text encoder frozen)
    L(theta) = E_{(x0, caption) ~ members, t, e} || e_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) e, t, c') - e ||^2

with c' the embedding of the empty prompt "" instead of the caption with probability
`caption_dropout` (so that the model also learns the unconditional branch classifier-free guidance
needs). The denoiser is a diffusers `UNet2DConditionModel` whose cross-attention reads c; the text
encoder is a `transformers.CLIPTextModel` built from a small config with a tokenizer the lab writes
from the split's captions (`lab.targets.text`), or, with `pretrained`, all of them come from a local
`StableDiffusionPipeline` folder (e.g. Stable Diffusion 1.5) whose UNet is fine-tuned, fully or
with LoRA adapters (`lora`). Everything else is `LatentDiffusion`'s: the autoencoder stage (an
AutoencoderKL), epochs, exports, EMA, sample grids (here with their prompts), live MIA AUC, DP-SGD
on the UNet. Exports are `StableDiffusionPipeline` folders (`text_encoder/`, `tokenizer/`, `unet/`,
`vae/`, `scheduler/`) that `diffusers.StableDiffusionPipeline.from_pretrained(folder)` samples from.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from lab.errors import LabError, check_number
from lab.targets.autoencoder import AutoencoderStage
from lab.targets.dp import DPSGD
from lab.targets.ldm import LatentDiffusion
from lab.targets.lora import LoRA
from lab.targets.text import build_text_encoder, build_tokenizer, check_text_encoder


class TextToImage(LatentDiffusion):
    """A text-conditioned latent DDPM; arguments as `LatentDiffusion`, plus:

    Args:
        cross_attention: put cross-attention (on the caption) in these UNet levels (True/False per level).
        attention_head_dim: width of each attention head.
        text_hidden_size, text_layers, text_heads, vocab_size, max_length: the CLIP text encoder built
            locally (ignored with `pretrained`, which brings its own).
        caption_dropout: probability of training on the empty prompt instead of the caption.
        guidance_scale: classifier-free guidance of the sample grids (1: none).
        pretrained: a local `StableDiffusionPipeline` folder to fine-tune (UNet, VAE, text encoder, tokenizer,
            schedule).
    """

    family_name = "stable_diffusion"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        autoencoder: AutoencoderStage | None = None,
        block_out_channels: tuple[int, ...] = (32, 64),
        cross_attention: tuple[bool, ...] = (True, True),
        layers_per_block: int = 1,
        attention_head_dim: int = 8,
        norm_num_groups: int = 8,
        text_hidden_size: int = 32,
        text_layers: int = 2,
        text_heads: int = 2,
        vocab_size: int = 1000,
        max_length: int = 16,
        caption_dropout: float = 0.1,
        guidance_scale: float = 3.0,
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
        check_number("model.caption_dropout", caption_dropout, minimum=0)
        if caption_dropout >= 1:
            raise LabError(f"model.caption_dropout must be below 1, got {caption_dropout}")
        check_number("model.guidance_scale", guidance_scale, minimum=1)
        if pretrained is None and len(cross_attention) != len(block_out_channels):
            raise LabError(
                f"model.cross_attention needs one entry per UNet level ({len(block_out_channels)}), "
                f"got {list(cross_attention)}"
            )
        self.tokenizer = None
        self._embedded: dict[str, torch.Tensor] = {}  # caption -> embedding, during a fit
        super().__init__(
            image_size=image_size,
            channels=channels,
            autoencoder=autoencoder,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            attention=False,
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
        self.save_hyperparameters()
        if pretrained is not None:
            self.load_text_parts(pretrained)
        else:
            check_number("model.vocab_size", vocab_size, minimum=1, integer=True)
            check_number("model.max_length", max_length, minimum=2, integer=True)
            self.build_text_parts()
        self.check_text_parts()

    def load_text_parts(self, pretrained: str) -> None:
        """The text encoder and tokenizer of the pretrained folder."""
        self.text_encoder, self.tokenizer = load_text_parts(pretrained)

    def build_text_parts(self) -> None:
        """A CLIP text encoder built locally (the tokenizer comes from the split's captions in `setup`)."""
        h = self.hparams
        self.text_encoder = build_text_encoder(
            vocab_size=h.vocab_size,
            hidden_size=h.text_hidden_size,
            layers=h.text_layers,
            heads=h.text_heads,
            max_length=h.max_length,
        )

    def check_text_parts(self) -> None:
        check_text_encoder(self.unet, self.text_encoder, "model")

    def build_unet(self, size: int, channels: int):
        """A `UNet2DConditionModel` with cross-attention on the caption embedding in the chosen levels."""
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(**self.unet_config(size, channels))

    def unet_config(self, size: int, channels: int) -> dict:
        h = self.hparams
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in h.cross_attention]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(h.cross_attention)]
        return dict(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(h.block_out_channels),
            layers_per_block=h.layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=h.norm_num_groups,
            cross_attention_dim=h.text_hidden_size,
            attention_head_dim=h.attention_head_dim,
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()
        return self

    def setup(self, stage: str) -> None:
        super().setup(stage)
        split = getattr(self.trainer.datamodule, "split", None) if self.trainer is not None else None
        if stage == "fit" and split is not None and split.captions is None:
            raise LabError("a text-to-image target trains on captioned data: set data.captions (e.g. text)")
        self._embedded = {}
        if self.tokenizer is None and split is not None and split.captions is not None:
            # from every caption of the split, members and non-members alike (see lab.targets.text)
            self.tokenizer = build_tokenizer(
                captions=split.captions,
                vocab_size=self.hparams.vocab_size,
                max_length=self.hparams.max_length,
                folder=Path(tempfile.mkdtemp(prefix="lab_tokenizer_")),
            )

    dropped = ""  # what a dropped caption becomes: the empty prompt, embedded as Stable Diffusion's pipeline does

    def condition(self, rows: torch.Tensor) -> tuple:
        """Each member's caption context (the family's `embed`), or the empty prompt's with probability
        caption_dropout."""
        captions = [self.trainer.datamodule.split.captions[r] for r in rows.tolist()]
        p = self.hparams.caption_dropout
        if p > 0:
            drop = (torch.rand(len(captions)) < p).tolist()
            captions = [self.dropped if d else c for c, d in zip(captions, drop)]
        todo = sorted({c for c in captions if isinstance(c, str) and c not in self._embedded})
        if todo:  # the text encoders are frozen: each caption is embedded once per fit
            with torch.no_grad():
                context = self.family.embed(self, todo)
            self._embedded.update((c, tuple(part[i] for part in context)) for i, c in enumerate(todo))
        return tuple(torch.stack(parts) for parts in zip(*(self._embedded[c] for c in captions)))

    def parts(self, unet) -> dict:
        if self.tokenizer is None:
            raise LabError(
                "the text-to-image target has no tokenizer yet "
                "(it is built from the split's captions when the fit starts)"
            )
        return {**super().parts(unet), "text_encoder": self.text_encoder, "tokenizer": self.tokenizer}

    def pipeline(self, unet):
        """The family's pipeline (`StableDiffusionPipeline`) of `unet` with this target's VAE, text encoder,
        tokenizer and schedule: a fine-tuned model keeps its base's scheduler, one trained here gets DDIM."""
        return self.family.pipeline(**self.parts(unet))

    def export_scheduler(self):
        from diffusers import DDIMScheduler

        if self.base_scheduler is not None:
            return self.base_scheduler
        return DDIMScheduler.from_config(self.scheduler.config, steps_offset=1)

    def sample_prompts(self, num_images: int) -> list[str]:
        """The prompts of the sample grid: the first members' captions (cycled)."""
        split = self.trainer.datamodule.split
        captions = [split.captions[r] for r in split.select(role="member")]
        return [captions[i % len(captions)] for i in range(num_images)]

    @torch.inference_mode()
    def sample(self, num_images: int, steps: int = 20, seed: int = 0) -> np.ndarray:
        unet = self.target_unet
        was_training = unet.training
        unet.eval()
        size = self.hparams.image_size
        try:
            return self.pipeline(unet)(
                self.sample_prompts(num_images),
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=self.hparams.guidance_scale,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                output_type="np",
            ).images
        finally:
            unet.train(was_training)

    def export(self, path: str | Path) -> None:
        """Save the family's pipeline folder (LoRA adapters merged into the UNet)."""
        self.pipeline(self.released_unet()).save_pretrained(str(path))


def load_text_parts(path: str, encoder_dir: str = "text_encoder", tokenizer_dir: str = "tokenizer", cls=None):
    """A frozen text encoder (`cls`, CLIPTextModel by default) and its tokenizer from a local pipeline folder,
    in float32 (a config may record float16)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from lab.targets.weights import complete_weights

    try:
        with complete_weights(f"model.pretrained {path}"):
            encoder = (cls or CLIPTextModel).from_pretrained(Path(path) / encoder_dir, local_files_only=True)
        encoder = encoder.to(torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(str(Path(path) / tokenizer_dir), local_files_only=True)
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many types for missing/corrupt/unsafe files
        raise LabError(
            f"model.pretrained: cannot load the text encoder and tokenizer of {path}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if len(tokenizer) > encoder.config.vocab_size:
        raise LabError(
            f"model.pretrained: the tokenizer of {path} has {len(tokenizer)} tokens "
            f"but its text encoder embeds only {encoder.config.vocab_size}"
        )
    return encoder.eval().requires_grad_(False), tokenizer
