"""Text-to-image latent diffusion with one CLIP text encoder: `StableDiffusionPipeline` folders
(Stable Diffusion 1.x and 2.x, and the lab's own text-to-image targets): `vae/` (AutoencoderKL),
`unet/` (UNet2DConditionModel), `text_encoder/` (CLIPTextModel), `tokenizer/`, `scheduler/`; a safety
checker, feature extractor or image encoder is never loaded.

    c   = text_encoder(tokenizer(prompt, padding="max_length")).last_hidden_state    (encode_prompt)
    z   = s E(x)  with s = vae.config.scaling_factor (0.18215 for SD 1.x / 2.x)
    out = unet(z_t, t, encoder_hidden_states=c).sample

SD 2.x (768 px) predicts v (`prediction_type: v_prediction` in its scheduler config), 2.x-base and 1.x
epsilon; the conversions of `Family` apply either way. The empty prompt "" is the unconditional branch
of classifier-free guidance, as `StableDiffusionPipeline` forms it.
"""

from __future__ import annotations

from lab.errors import LabError
from lab.targets.families.base import Family
from lab.targets.families.latent import check_autoencoder


def check_tokenizer(text_encoder, tokenizer, where) -> None:
    """One LabError where the tokenizer cannot feed the text encoder (length, vocabulary)."""
    positions = getattr(text_encoder.config, "max_position_embeddings", None)
    length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(length, int) or length < 2 or (positions is not None and length > positions):
        hint = " (a missing or damaged tokenizer?)" if isinstance(length, int) and length > 10**6 else ""
        raise LabError(
            f"{where}: the tokenizer pads prompts to {length!r} tokens "
            f"but the text encoder takes at most {positions}{hint}"
        )
    vocab = getattr(text_encoder.config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise LabError(f"{where}: the tokenizer has {len(tokenizer)} tokens but the text encoder embeds only {vocab}")


def text_parts(pipe, where, encoder: str = "text_encoder", tokenizer: str = "tokenizer"):
    """The pipeline's (text encoder, tokenizer) named so, checked and frozen."""
    te, tok = getattr(pipe, encoder, None), getattr(pipe, tokenizer, None)
    if te is None or tok is None or not hasattr(getattr(te, "config", None), "hidden_size"):
        raise LabError(
            f"{where}: a text-to-image target needs a text encoder ({encoder}/) and a tokenizer ({tokenizer}/)"
        )
    check_tokenizer(te, tok, f"{where} ({encoder})")
    return te.eval().requires_grad_(False), tok


class StableDiffusionFamily(Family):
    name = "stable_diffusion"
    pipelines = ("StableDiffusionPipeline",)
    conditional = True

    @classmethod
    def claims(cls, target) -> bool:
        return target.text_encoder is not None and target.text_encoder_2 is None

    def target(self, pipe, path=None, meta=None):
        from diffusers import UNet2DConditionModel

        from lab.targets.text import check_text_encoder

        where = path or type(pipe).__name__
        unet, scheduler, vae = (getattr(pipe, k, None) for k in ("unet", "scheduler", "vae"))
        self.check_denoiser(unet, UNet2DConditionModel, where, type(pipe).__name__)
        self.check_scheduler(scheduler, where)
        text_encoder, tokenizer = text_parts(pipe, where)
        check_text_encoder(unet, text_encoder, where)
        check_autoencoder(vae, unet, where)
        return self.make_target(
            path, meta, unet, scheduler, autoencoder=vae, text_encoder=text_encoder, tokenizer=tokenizer
        )

    def denoise(self, unet, x_t, t, context=None):
        return unet(x_t, t, encoder_hidden_states=context[0]).sample

    def embed(self, parts, prompts):
        from lab.targets.text import encode_prompts

        return (encode_prompts(parts.text_encoder, parts.tokenizer, prompts),)

    def pipeline(self, unet, scheduler, autoencoder, text_encoder, tokenizer, **_):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=autoencoder,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe
