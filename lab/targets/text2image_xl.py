"""An SDXL-style text-to-image target, tiny and local: SDXL's conditioning on a small UNet.

    c      = concat(CLIP_1(tokens).hidden_states[-2], CLIP_2(tokens).hidden_states[-2])
    pooled = CLIP_2(tokens).text_embeds,      time_ids = (H, W, 0, 0, H, W)
    L(theta) = E || e_theta(z_t, t, c', added_cond_kwargs(pooled', time_ids)) - y ||^2

as `TextToImage` (y per `prediction_type`, caption dropout to the empty prompt, the autoencoder stage,
EMA, DP-SGD, LoRA), with SDXL's parts: a `UNet2DConditionModel` with `addition_embed_type: text_time`
(its `projection_class_embeddings_input_dim` = 6 x `addition_time_embed_dim` + the second encoder's
`projection_dim`), a `CLIPTextModel` and a `CLIPTextModelWithProjection` built from small configs, and
the lab's tokenizer for both. The conditioning is the `sdxl` family adapter's (`lab.targets.families.sdxl`),
the one attacks use, so training and attack condition alike; with `force_zeros_for_empty_prompt` (SDXL
base's setting) the dropped captions are zeros, as the pipeline's unconditional branch. Exports are
`StableDiffusionXLPipeline` folders that diffusers samples from offline; `pretrained` fine-tunes a local
SDXL folder (its UNet, VAE, both text encoders and tokenizers, and its scheduler).
"""

from __future__ import annotations

import torch

from lab.errors import LabError, check_number
from lab.targets.text import build_text_encoder
from lab.targets.text2image import TextToImage, load_text_parts

DROPPED = object()  # the key of a dropped caption's context (distinct from a caption that is "")


class TextToImageXL(TextToImage):
    """Arguments as `TextToImage`, plus:

    Args:
        text_hidden_size_2, text_layers_2, text_heads_2: the second (projecting) CLIP text encoder.
        projection_dim: width of its pooled `text_embeds`.
        addition_time_embed_dim: width of each of the 6 time ids' embedding in the UNet.
        force_zeros_for_empty_prompt: the unconditional context is zeros (SDXL base) rather than the
            embedding of "". None: the pretrained folder's own setting (model_index.json), else True.
    """

    family_name = "sdxl"

    def __init__(
        self,
        *args,
        text_hidden_size_2: int = 32,
        text_layers_2: int = 2,
        text_heads_2: int = 2,
        projection_dim: int = 32,
        addition_time_embed_dim: int = 8,
        force_zeros_for_empty_prompt: bool | None = None,
        **kwargs,
    ):
        check_number("model.projection_dim", projection_dim, minimum=1, integer=True)
        check_number("model.addition_time_embed_dim", addition_time_embed_dim, minimum=1, integer=True)
        self.text_encoder_2 = self.tokenizer_2 = None
        self._xl = {
            "text_hidden_size_2": text_hidden_size_2,
            "text_layers_2": text_layers_2,
            "text_heads_2": text_heads_2,
            "projection_dim": projection_dim,
            "addition_time_embed_dim": addition_time_embed_dim,
        }
        if force_zeros_for_empty_prompt is None:
            force_zeros_for_empty_prompt = pretrained_force_zeros(kwargs.get("pretrained"))
        self._force_zeros = bool(force_zeros_for_empty_prompt)
        super().__init__(*args, **kwargs)

    @property
    def family(self):
        if getattr(self, "_family", None) is None:
            from lab.targets.families import family

            self._family = family(self.family_name, force_zeros_for_empty_prompt=self._force_zeros)
        return self._family

    def unet_config(self, size: int, channels: int) -> dict:
        x = self._xl
        return {
            **super().unet_config(size, channels),
            "cross_attention_dim": self.hparams.text_hidden_size + x["text_hidden_size_2"],
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": x["addition_time_embed_dim"],
            "projection_class_embeddings_input_dim": 6 * x["addition_time_embed_dim"] + x["projection_dim"],
        }

    def load_text_parts(self, pretrained: str) -> None:
        from transformers import CLIPTextModelWithProjection

        super().load_text_parts(pretrained)
        self.text_encoder_2, self.tokenizer_2 = load_text_parts(
            pretrained, "text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection
        )

    def build_text_parts(self) -> None:
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        super().build_text_parts()
        h, x = self.hparams, self._xl
        if x["text_hidden_size_2"] % x["text_heads_2"]:
            raise LabError(
                f"model.text_hidden_size_2 {x['text_hidden_size_2']} must be divisible by its "
                f"{x['text_heads_2']} heads"
            )
        first = build_text_encoder(vocab_size=h.vocab_size, max_length=h.max_length)  # the shared token ids
        config = CLIPTextConfig(
            **{
                k: v
                for k, v in first.config.to_dict().items()
                if k in ("vocab_size", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
            },
            hidden_size=x["text_hidden_size_2"],
            intermediate_size=2 * x["text_hidden_size_2"],
            num_hidden_layers=x["text_layers_2"],
            num_attention_heads=x["text_heads_2"],
            projection_dim=x["projection_dim"],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.text_encoder_2 = CLIPTextModelWithProjection(config).eval().requires_grad_(False)

    def check_text_parts(self) -> None:
        from lab.targets.families.sdxl import check_conditioning

        check_conditioning(self.unet, self.text_encoder, self.text_encoder_2, "model")

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder_2.eval()
        return self

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.tokenizer_2 is None:
            self.tokenizer_2 = self.tokenizer  # the lab's tokenizer feeds both encoders

    dropped = DROPPED

    def condition(self, rows: torch.Tensor) -> tuple:
        """As `TextToImage`, with the dropped captions' context the pipeline's unconditional one (zeros with
        force_zeros_for_empty_prompt); a caption that is itself "" is embedded, as the pipeline embeds it."""
        if DROPPED not in self._embedded:
            with torch.no_grad():
                self._embedded[DROPPED] = tuple(part[0] for part in self.family.unconditional(self))
        return super().condition(rows)

    def parts(self, unet) -> dict:
        return {**super().parts(unet), "text_encoder_2": self.text_encoder_2, "tokenizer_2": self.tokenizer_2}


def pretrained_force_zeros(path: str | None) -> bool:
    """A pretrained SDXL folder's `force_zeros_for_empty_prompt` (True, the pipeline's default, if unstated)."""
    if path is None:
        return True
    from lab.targets.load import pipeline_index

    try:
        value = pipeline_index(path).get("force_zeros_for_empty_prompt", True)
    except LabError as e:
        raise LabError(f"model.pretrained: {e}") from None
    if not isinstance(value, bool):
        raise LabError(
            f"model.pretrained: {path}/model_index.json: force_zeros_for_empty_prompt must be true or false"
        )
    return value
