"""The adapter contract: what the lab needs to know about one family of diffusers models.

A family is one kind of pipeline folder (`DDPMPipeline`, `LDMPipeline`, `StableDiffusionPipeline`,
`StableDiffusionXLPipeline`, ...). Its adapter is the only code that knows how that family's denoiser
is called and what its folder holds; attacks, scoring and the training targets speak to the adapter
and never to a pipeline class. An adapter owns:

- **loading**: `load(path, index, options)` reads a local folder into a diffusers pipeline (never
  the Hub); `target(pipe, path, meta)` checks its parts and makes the `Target` attacks bind;
- **the denoiser call**: `denoise(unet, x_t, t, context)` is the raw model output for a batch, with the
  family's conditioning: none, a caption embedding (`context = (c,)`), or SDXL's two embeddings and
  time ids (`context = (c, pooled, time_ids)`). `embed(target, prompts)` computes the context of a list
  of prompts, `unconditional(target)` that of the empty prompt as the family's own pipeline forms it;
  a context is always a tuple of tensors with one row per example, so attacks slice, repeat and
  hash it without knowing what it holds. `parts` is anything holding the target's parts as
  attributes (`unet`, `autoencoder`, `text_encoder`, `tokenizer`, ...): a Target, a bound attack or a
  training module, so training and attacks condition alike;
- **the forward process** and **conversions**: `q_sample(x0, noise, abar)` is x_t; `eps_from`,
  `x0_from` and `residual` turn the model output into a noise prediction, a clean-sample prediction
  and the residual of the model's own training objective, for each prediction type
  (`PREDICTION_TYPES`), from the identities (abar = abar_t)

      x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,     v = sqrt(abar) eps - sqrt(1 - abar) x0
      eps = sqrt(abar) v + sqrt(1 - abar) x_t,      x0 = sqrt(abar) x_t - sqrt(1 - abar) v;

- **the latent convention**: `to_latent(autoencoder, x)` / `to_image(autoencoder, z)` map images to
  what the denoiser models and back, as the family's own pipeline does (identity on pixels);
- **export and sampling** of the lab's own targets: `pipeline(**components)` is the diffusers pipeline
  an export saves (`save_pretrained`) and `sampler(target)` a deterministic DDIM sampler.

Adding a family is one module subclassing `Family` plus one line in `lab.targets.families.FAMILIES`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lab.errors import LabError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
FROZEN = (
    "autoencoder",
    "text_encoder",
    "text_encoder_2",
)  # modules a Target holds in eval mode, without gradients  # what a DDPM-type scheduler's model output can be


class Family:
    """The DDPM-type defaults: Gaussian forward process on a discrete `alphas_cumprod` schedule."""

    name = ""
    pipelines: tuple[str, ...] = ()  # the diffusers pipeline classes (`_class_name`) this adapter loads
    conditional = False  # a text-to-image family: every denoiser call takes a prompt context

    # --- loading -----------------------------------------------------------------------------

    def load(self, path: Path, index: dict, options: dict):
        """The diffusers pipeline in folder `path` (its model_index.json is `index`, checked)."""
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(path, low_cpu_mem_usage=False, local_files_only=True, **options)

    def target(self, pipe, path: Path | None = None, meta: dict | None = None):
        """The loaded pipeline as a checked `Target` (without a split)."""
        raise NotImplementedError

    def make_target(self, path, meta, unet, scheduler, **parts):
        """The checked parts as a frozen `Target` of this family, without a split."""
        from lab.targets.target import Target

        frozen = {k: v.eval().requires_grad_(False) if k in FROZEN else v for k, v in parts.items()}
        return Target(
            unet=unet.eval().requires_grad_(False),
            scheduler=scheduler,
            split=None,
            split_path=None,
            path=path,
            meta=meta or {},
            family=self,
            **frozen,
        )

    def check_scheduler(self, scheduler, where) -> None:
        """A DDPM-type discrete schedule the lab's forward process and conversions describe."""
        if getattr(getattr(scheduler, "config", None), "get", None) is None:
            raise LabError(f"{where}: the scheduler {type(scheduler).__name__} has no config")
        if not hasattr(scheduler, "alphas_cumprod"):
            raise LabError(
                f"{where}: the scheduler {type(scheduler).__name__} has no alphas_cumprod (not a DDPM-type schedule)"
            )
        kind = scheduler.config.get("prediction_type", "epsilon")
        if kind not in PREDICTION_TYPES:
            raise LabError(
                f"{where}: the denoiser predicts {kind!r}; supported prediction types: {', '.join(PREDICTION_TYPES)}"
            )
        if scheduler.config.get("timestep_type", "discrete") != "discrete":
            raise LabError(
                f"{where}: the scheduler feeds the denoiser {scheduler.config.get('timestep_type')!r} timesteps "
                "(an EDM-style model); the lab's families call it on the discrete steps 0..T-1"
            )

    added_conditioning: str | None = None  # the UNet's `addition_embed_type` this family feeds (SDXL: text_time)

    def check_denoiser(self, unet, cls, where, kind: str) -> None:
        """One LabError unless `unet` is a `cls` whose call this family makes: no class labels, no inputs it
        does not feed, and an output the size of its input (not a learned-variance split)."""
        if not isinstance(unet, cls):
            raise LabError(f"{where}: the denoiser is a {type(unet).__name__}; a {kind} needs a {cls.__name__}")
        config = unet.config
        if config.get("class_embed_type") is not None or config.get("num_class_embeds") is not None:
            raise LabError(
                f"{where}: the denoiser is class-conditional (class_embed_type {config.get('class_embed_type')!r},"
                f" num_class_embeds {config.get('num_class_embeds')!r}); a {kind} passes no class labels"
            )
        if config.get("addition_embed_type") != self.added_conditioning:
            raise LabError(
                f"{where}: the UNet's addition_embed_type is {config.get('addition_embed_type')!r} but a {kind} "
                f"feeds {self.added_conditioning!r}"
            )
        if config.get("encoder_hid_dim_type") is not None:
            raise LabError(
                f"{where}: the UNet projects its encoder states first (encoder_hid_dim_type "
                f"{config.get('encoder_hid_dim_type')!r}); a {kind} passes the text encoder's states as they are"
            )
        if config.get("out_channels", config.get("in_channels")) != config.get("in_channels"):
            raise LabError(
                f"{where}: the UNet outputs {config.get('out_channels')} channels for {config.get('in_channels')} "
                "input channels (a learned-variance model?); the lab reads the output as one prediction"
            )

    # --- the denoiser --------------------------------------------------------------------------

    def denoise(self, unet, x_t: torch.Tensor, t: torch.Tensor, context: tuple | None = None) -> torch.Tensor:
        """The raw model output f(x_t, t[, context]) for a batch."""
        return unet(x_t, t).sample

    def embed(self, parts, prompts: list[str]) -> tuple:
        raise LabError(f"a {self.name} target takes no prompts")

    def unconditional(self, parts) -> tuple:
        """The context of the empty prompt, one row."""
        return self.embed(parts, [""])

    # --- forward process and conversions ---------------------------------------------------------

    @staticmethod
    def q_sample(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar) x0 + sqrt(1 - abar) noise."""
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    @staticmethod
    def eps_from(out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, kind: str) -> torch.Tensor:
        """The noise prediction: out (epsilon), sqrt(abar) out + sqrt(1 - abar) x_t (v), or
        (x_t - sqrt(abar) out) / sqrt(1 - abar) (sample)."""
        if kind == "epsilon":
            return out
        if kind == "v_prediction":
            return abar.sqrt() * out + (1 - abar).sqrt() * x_t
        return (x_t - abar.sqrt() * out) / (1 - abar).sqrt()

    @staticmethod
    def x0_from(out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, kind: str) -> torch.Tensor:
        """The clean-sample prediction: (x_t - sqrt(1 - abar) out) / sqrt(abar) (epsilon),
        sqrt(abar) x_t - sqrt(1 - abar) out (v), or out (sample)."""
        if kind == "epsilon":
            return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
        if kind == "v_prediction":
            return abar.sqrt() * x_t - (1 - abar).sqrt() * out
        return out

    @staticmethod
    def training_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor, kind: str) -> torch.Tensor:
        """What the model is trained to output: noise, v = sqrt(abar) noise - sqrt(1 - abar) x0, or x0."""
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return abar.sqrt() * noise - (1 - abar).sqrt() * x0
        return x0

    def residual(self, out, x0, noise, abar, kind: str) -> torch.Tensor:
        """The model output minus its own training target (its squared norm is the training loss)."""
        return out - self.training_target(x0, noise, abar, kind)

    # --- latents ---------------------------------------------------------------------------------

    def to_latent(self, autoencoder, x: torch.Tensor) -> torch.Tensor:
        """Images -> what the denoiser models (identity without an autoencoder)."""
        if autoencoder is None:
            return x
        from lab.targets.autoencoder import encode

        return encode(autoencoder, x)

    def to_image(self, autoencoder, z: torch.Tensor) -> torch.Tensor:
        if autoencoder is None:
            return z
        from lab.targets.autoencoder import decode

        return decode(autoencoder, z)

    # --- export and sampling ---------------------------------------------------------------------

    def pipeline(self, **components):
        """The diffusers pipeline an export of the lab's own target saves."""
        raise NotImplementedError

    def sampler(self, target):
        """A deterministic DDIM sampler (eta = 0) on the target's own noise schedule, progress bar off."""
        raise NotImplementedError(f"{self.name}: no unconditional sampler")


def ddim_images(pipe, num_images: int, steps: int, generator, **kwargs):
    """`num_images` samples as NHWC floats in [0, 1] (what every pipeline's `output_type="np"` gives)."""
    return pipe(
        batch_size=num_images, generator=generator, num_inference_steps=steps, output_type="np", **kwargs
    ).images
