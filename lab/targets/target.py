"""What an attack binds: a frozen denoiser, its noise schedule, the parts its family needs, the ground truth.

A `Target` comes from a pipeline folder (`lab.targets.load`), from a pipeline in memory
(`target_from_pipeline`) or from a training module (`attack_target`). `family` is its adapter
(`lab.targets.families`): attacks call the denoiser, embed prompts and move between images and
latents through it only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.data.split import MembershipSplit
from lab.errors import LabError
from lab.targets.autoencoder import downsampling


@dataclass
class Target:
    """A frozen denoiser, its noise schedule, the autoencoder of a latent target, and the ground truth."""

    unet: object  # the denoiser (a diffusers UNet2DModel / UNet2DConditionModel)
    scheduler: object  # a diffusers scheduler with `alphas_cumprod` (DDPM-type)
    split: MembershipSplit | None
    split_path: Path | None
    path: Path | None
    meta: dict = field(default_factory=dict)
    autoencoder: object = None  # latent targets: a diffusers AutoencoderKL or VQModel, frozen
    text_encoder: object = None  # text-to-image targets: a transformers CLIPTextModel, frozen
    tokenizer: object = None  # and its CLIPTokenizer
    shared: dict = field(
        default_factory=dict, repr=False
    )  # what attacks run together share on this target (`lab.scoring`)
    family: object = None  # its adapter (`lab.targets.families.Family`); None: inferred from the parts
    text_encoder_2: object = None  # SDXL: the second text encoder (CLIPTextModelWithProjection)
    tokenizer_2: object = None

    def __post_init__(self):
        if self.family is None:
            from lab.targets.families import infer_family

            self.family = infer_family(self)

    @property
    def conditional(self) -> bool:
        """A text-to-image target: its denoiser takes a prompt embedding."""
        return self.family.conditional

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    @property
    def epoch(self) -> int | None:
        return self.meta.get("epoch")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, size, size) of the images the target models (decoded size for latent targets)."""
        size = self.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        if self.autoencoder is None:
            return (self.unet.config.in_channels, size, size)
        factor = downsampling(self.autoencoder)
        return (self.autoencoder.config.in_channels, size * factor, size * factor)

    def with_split(self, split_path: str | Path) -> "Target":
        """Attach the membership split, checking that its images fit this target."""
        split_path = Path(split_path)
        if not split_path.is_file():
            raise LabError(
                f"no membership split for target {self.path}: expected {split_path} "
                "(or pass --split FILE, or --members/--nonmembers DIRS)"
            )
        split = MembershipSplit.load(split_path)
        if self.conditional and split.captions is None:
            raise LabError(
                f"{self.path} is a text-to-image target but the split {split_path} has no captions "
                "(draw it with data.captions, or give --captions COLUMN with --members/--nonmembers)"
            )
        want = (split.preprocess["channels"], split.preprocess["image_size"], split.preprocess["image_size"])
        if self.image_shape != want:
            raise LabError(f"the split's images have shape {want} but the target {self.path} takes {self.image_shape}")
        bound = self.meta.get("split_fingerprint")
        if bound is not None and bound != split.fingerprint():
            raise LabError(
                f"the split {split_path} is not the one {self.path} was trained on: its ids, roles, evaluation splits "
                f"or data differ from the fingerprint in target.json ({split.fingerprint()[:12]} != {str(bound)[:12]})"
            )
        self.split, self.split_path = split, split_path
        return self

    @property
    def split_bound(self) -> bool:
        """True when target.json recorded the split it was trained on (and `with_split` checked it)."""
        return self.meta.get("split_fingerprint") is not None
