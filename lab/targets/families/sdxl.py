"""Stable Diffusion XL: `StableDiffusionXLPipeline` folders (stabilityai/stable-diffusion-xl-base-1.0,
CommonCanvas-XL-C, Kohaku-XL-Epsilon, and the lab's own SDXL-style targets): `vae/` (AutoencoderKL,
scaling_factor 0.13025, force_upcast), `unet/` (UNet2DConditionModel with `addition_embed_type:
text_time`), `text_encoder/` (CLIPTextModel), `text_encoder_2/` (CLIPTextModelWithProjection),
`tokenizer/`, `tokenizer_2/`, `scheduler/`. As `StableDiffusionXLPipeline.encode_prompt` and
`_get_add_time_ids` form the conditioning (no clip skip, no micro-conditioning beyond the defaults):

    h_i    = text_encoder_i(tokenizer_i(prompt, padding="max_length"), output_hidden_states=True)
    c      = concat(h_1.hidden_states[-2], h_2.hidden_states[-2])        (B, L, D_1 + D_2)
    pooled = h_2.text_embeds                                             (B, projection_dim)
    time_ids = (H, W, 0, 0, H, W)    original size, crop top-left, target size; H = W = the image side
    out    = unet(z_t, t, encoder_hidden_states=c,
                  added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample

The empty prompt is the unconditional branch; with `force_zeros_for_empty_prompt` (model_index.json,
true for SDXL base) the pipeline uses zeros for c and pooled instead of embedding "", and so does the
lab. Latents are z = s E(x) with s = vae.config.scaling_factor, or (E(x) - mean) s / std where the
VAE config states `latents_mean` / `latents_std`; a VAE whose config says `force_upcast` runs in
float32 under 16-bit precision (SDXL's VAE overflows in fp16).
"""

from __future__ import annotations

import torch

from lab.errors import LabError
from lab.targets.families.base import Family
from lab.targets.families.latent import check_autoencoder
from lab.targets.families.stable_diffusion import text_parts

TIME_IDS = 6  # original (h, w), crop (top, left), target (h, w)


def check_conditioning(unet, text_encoder, text_encoder_2, where) -> None:
    """One LabError where the UNet's added conditioning cannot take the two encoders' embeddings."""
    if unet.config.get("addition_embed_type") != "text_time":
        raise LabError(
            f"{where}: an SDXL UNet has addition_embed_type 'text_time', "
            f"got {unet.config.get('addition_embed_type')!r}"
        )
    if not hasattr(text_encoder_2, "text_projection"):
        raise LabError(
            f"{where}: text_encoder_2 is a {type(text_encoder_2).__name__}; SDXL's pooled embedding needs a "
            "CLIPTextModelWithProjection"
        )
    width = int(text_encoder.config.hidden_size) + int(text_encoder_2.config.hidden_size)
    if unet.config.cross_attention_dim != width:
        raise LabError(
            f"{where}: the two text encoders give {text_encoder.config.hidden_size} + "
            f"{text_encoder_2.config.hidden_size} = {width}-wide embeddings but the UNet's cross-attention "
            f"takes {unet.config.cross_attention_dim}"
        )
    projection = int(text_encoder_2.config.projection_dim)
    passed = int(unet.config.addition_time_embed_dim) * TIME_IDS + projection
    expected = unet.config.get("projection_class_embeddings_input_dim")
    if passed != expected:
        raise LabError(
            f"{where}: text_encoder_2 projects to {projection} and the UNet embeds {TIME_IDS} time ids of "
            f"{unet.config.addition_time_embed_dim}: {passed} in all, but the UNet's "
            f"projection_class_embeddings_input_dim is {expected}"
        )


class StableDiffusionXLFamily(Family):
    name = "sdxl"
    pipelines = ("StableDiffusionXLPipeline",)
    conditional = True
    added_conditioning = "text_time"

    def __init__(self, force_zeros_for_empty_prompt: bool = True):
        self.force_zeros = bool(force_zeros_for_empty_prompt)

    @classmethod
    def claims(cls, target) -> bool:
        return target.text_encoder_2 is not None

    def target(self, pipe, path=None, meta=None):
        from diffusers import UNet2DConditionModel

        where = path or type(pipe).__name__
        unet, scheduler, vae = (getattr(pipe, k, None) for k in ("unet", "scheduler", "vae"))
        self.check_denoiser(unet, UNet2DConditionModel, where, type(pipe).__name__)
        self.check_scheduler(scheduler, where)
        if getattr(pipe, "text_encoder_2", None) is None or getattr(pipe, "tokenizer_2", None) is None:
            raise LabError(
                f"{where}: an SDXL target needs its second text encoder and tokenizer "
                "(text_encoder_2/, a CLIPTextModelWithProjection, and tokenizer_2/)"
            )
        text_encoder, tokenizer = text_parts(pipe, where)
        text_encoder_2, tokenizer_2 = text_parts(pipe, where, "text_encoder_2", "tokenizer_2")
        check_conditioning(unet, text_encoder, text_encoder_2, where)
        check_autoencoder(vae, unet, where)
        self.force_zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True))
        return self.make_target(
            path,
            meta,
            unet,
            scheduler,
            autoencoder=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
        )

    def denoise(self, unet, x_t, t, context=None):
        c, pooled, time_ids = context
        added = {"text_embeds": pooled, "time_ids": time_ids}
        return unet(x_t, t, encoder_hidden_states=c, added_cond_kwargs=added).sample

    @staticmethod
    def image_side(parts) -> int:
        """The pipeline's default image side: the UNet's sample size times the VAE's downsampling."""
        from lab.targets.autoencoder import downsampling

        size = parts.unet.config.sample_size
        return (size if isinstance(size, int) else size[0]) * downsampling(parts.autoencoder)

    def time_ids(self, parts, n: int, dtype, device) -> torch.Tensor:
        side = self.image_side(parts)
        return torch.tensor([[side, side, 0, 0, side, side]], dtype=dtype, device=device).repeat(n, 1)

    def embed(self, parts, prompts):
        hidden, pooled = [], None
        for encoder, tokenizer in ((parts.text_encoder, parts.tokenizer), (parts.text_encoder_2, parts.tokenizer_2)):
            device = next(encoder.parameters()).device
            ids = tokenizer(
                list(prompts),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out = encoder(ids.to(device), output_hidden_states=True)
            if out[0].ndim == 2:  # the pooled output of the projecting (final) encoder
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        c = torch.cat(hidden, dim=-1)
        return (c, pooled, self.time_ids(parts, len(prompts), c.dtype, c.device))

    def unconditional(self, parts):
        if not self.force_zeros:
            return self.embed(parts, [""])
        c, pooled, time_ids = self.embed(parts, [""])
        return (torch.zeros_like(c), torch.zeros_like(pooled), time_ids)

    def to_latent(self, autoencoder, x):
        z = super().to_latent(autoencoder, x)  # s E(x)
        mean, std = autoencoder.config.get("latents_mean"), autoencoder.config.get("latents_std")
        if mean is None or std is None:
            return z
        shape = (1, -1, 1, 1)
        mean = torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape)
        std = torch.tensor(std, dtype=z.dtype, device=z.device).view(shape)
        return (z - mean * autoencoder.config.scaling_factor) / std

    def to_image(self, autoencoder, z):
        mean, std = autoencoder.config.get("latents_mean"), autoencoder.config.get("latents_std")
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape)
            std = torch.tensor(std, dtype=z.dtype, device=z.device).view(shape)
            z = z * std + mean * autoencoder.config.scaling_factor
        return super().to_image(autoencoder, z)

    def pipeline(self, unet, scheduler, autoencoder, text_encoder, tokenizer, text_encoder_2, tokenizer_2, **_):
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=autoencoder,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=self.force_zeros,
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe
