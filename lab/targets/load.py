"""Load what an attack needs from a target folder on disk: denoiser, noise schedule, autoencoder, split.

A target is a diffusers pipeline folder: `DDPMPipeline`/`DDIMPipeline` (pixel targets),
`LDMPipeline` (latent targets: `vqvae/` holds an AutoencoderKL or VQModel) or
`StableDiffusionPipeline` (text-to-image: `vae/`, a `UNet2DConditionModel`, `text_encoder/` and
`tokenizer/`; a safety checker or feature extractor is never loaded). It is the
lab's own export, or a pretrained model saved locally (e.g. google/ddpm-cifar10-32,
CompVis/ldm-celebahq-256), plus a membership split file: `split.json` beside it, or one the user
names or builds from member / non-member image folders. Weights are read from safetensors, or
from `.bin` files with `torch.load(weights_only=True)` (diffusers' loader), never as arbitrary pickles;
an fp16-variant-only folder loads with that variant, every module is upcast to float32 (the Trainer's
precision decides what runs in 16 bits), and an LDM whose vqvae states no latent scale gets 1.0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.utils import logging as diffusers_logging

from lab.data.split import MembershipSplit
from lab.errors import LabError
from lab.targets.autoencoder import downsampling, latent_channels
from lab.targets.weights import complete_weights

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what a DDPM/DDIM scheduler's model output can be
PIPELINES = {"DDPMPipeline": "unet", "DDIMPipeline": "unet", "LDMPipeline": "vqvae", "StableDiffusionPipeline": "vae"}
OPTIONAL_PARTS = ("safety_checker", "feature_extractor", "image_encoder")
COMPONENT_LIBRARIES = (
    "diffusers",
    "transformers",
    "stable_diffusion",
    None,
)  # of an SD folder: attacks never need them


@dataclass
class Target:
    """A frozen denoiser, its noise schedule, the autoencoder of a latent target, and the ground truth."""

    unet: UNet2DModel
    scheduler: object  # a diffusers scheduler with `alphas_cumprod` (DDPM / DDIM)
    split: MembershipSplit | None
    split_path: Path | None
    path: Path | None
    meta: dict = field(default_factory=dict)
    autoencoder: AutoencoderKL | VQModel | None = None
    text_encoder: object = None  # text-to-image targets: a transformers CLIPTextModel, frozen
    tokenizer: object = None  # and its CLIPTokenizer
    shared: dict = field(
        default_factory=dict, repr=False
    )  # what attacks run together share on this target (`lab.scoring`)

    @property
    def conditional(self) -> bool:
        """A text-to-image target: its denoiser takes a prompt embedding."""
        return self.text_encoder is not None

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


def is_pipeline_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def target_folders(path: str | Path) -> list[Path]:
    """A pipeline folder, or a run folder holding several (e.g. epoch_0001, epoch_0100), sorted."""
    path = Path(path)
    if not path.is_dir():
        raise LabError(f"target folder not found: {path}")
    if is_pipeline_folder(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.endswith(".tmp") and is_pipeline_folder(p))
    if not found:
        raise LabError(f"{path} is no diffusers pipeline folder (no model_index.json) and holds none")
    return found


def pipeline_index(path: str | Path) -> dict:
    """A pipeline folder's model_index.json, checked: a JSON object naming its class (`_class_name`) and
    components from diffusers / transformers only (nothing else is imported)."""
    path = Path(path)
    if not is_pipeline_folder(path):
        raise LabError(f"{path} is no diffusers pipeline folder (no model_index.json)")
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LabError(f"{path / 'model_index.json'} is not valid JSON: {e}") from None
    if not isinstance(index, dict):
        raise LabError(f"{path / 'model_index.json'} is not a JSON object")
    for name, value in index.items():
        if not name.startswith("_") and isinstance(value, list) and value and value[0] not in COMPONENT_LIBRARIES:
            raise LabError(
                f"{path / 'model_index.json'}: component {name!r} comes from {value[0]!r}; "
                f"a target's components come from {', '.join(str(x) for x in COMPONENT_LIBRARIES if x)}"
            )
    return index


def read_meta(path: str | Path) -> dict:
    """A target folder's target.json (empty when absent), checked field by field."""
    meta_path = Path(path) / "target.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise LabError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise LabError(f"{meta_path} is not a JSON object")
    if meta.get("epoch") is not None and (
        not isinstance(meta["epoch"], int) or isinstance(meta["epoch"], bool) or meta["epoch"] < 0
    ):
        raise LabError(f"{meta_path}: epoch must be a non-negative integer, got {meta['epoch']!r}")
    if not isinstance(meta.get("split_fingerprint", ""), str):
        raise LabError(f"{meta_path}: split_fingerprint must be a string")
    return meta


def load_pipeline(path: str | Path) -> Target:
    """The target in a diffusers pipeline folder, checked, without a split."""
    path = Path(path)
    index = pipeline_index(path)
    kind = index.get("_class_name")
    if not isinstance(kind, str) or kind not in PIPELINES:
        raise LabError(f"{path} holds a {kind}; supported pipelines: {', '.join(PIPELINES)}")
    from lab.console import quiet_transformers

    quiet_transformers()  # "Loading weights" bars of a text encoder
    diffusers_logging.disable_progress_bar()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # LDMPipeline types `vqvae` as VQModel; an AutoencoderKL there is fine
    skip = {part: None for part in OPTIONAL_PARTS if part in index}
    variant = weight_variant(path, index)
    try:
        with complete_weights(path):
            pipe = DiffusionPipeline.from_pretrained(
                path,
                low_cpu_mem_usage=False,
                local_files_only=True,
                **skip,
                **({"variant": variant} if variant else {}),
            )  # never the Hub
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for missing/corrupt/unsafe files
        raise LabError(
            f"cannot load the diffusers pipeline in {path}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    upcast_and_check(pipe, path)
    if kind == "LDMPipeline" and not stated_scaling_factor(path / "vqvae"):
        # CompVis' LDMs (ldm-celebahq-256, ...) were trained on unscaled latents; their vqvae config states no
        # scaling_factor, so diffusers' class default (0.18215) would shrink every latent the UNet sees
        pipe.vqvae.register_to_config(scaling_factor=1.0)
    meta = read_meta(path)
    return target_from_pipeline(pipe, path, meta)


WEIGHT_FILE = re.compile(
    r"^(diffusion_pytorch_model|model|pytorch_model)(?:-\d+-of-\d+)?(?:\.([A-Za-z0-9_]+))?\.(safetensors|bin)$"
)


def weight_variant(path: Path, index: dict) -> str | None:
    """The weights' variant ("fp16") where some component folder holds only variant files
    (`diffusion_pytorch_model.fp16.safetensors`), as Hub repositories with fp16 branches ship them."""
    variants = set()
    for name, value in index.items():
        folder = path / name
        if name.startswith("_") or not isinstance(value, list) or not value or value[0] is None or not folder.is_dir():
            continue
        found = [m.group(2) for f in folder.iterdir() if (m := WEIGHT_FILE.match(f.name))]
        if found and None not in found:
            variants |= set(found)
    if len(variants) > 1:
        raise LabError(f"{path}: component weights come in several variants ({', '.join(sorted(variants))}): keep one")
    return variants.pop() if variants else None


def upcast_and_check(pipe, path: Path) -> None:
    """Every module of a loaded pipeline in float32 (weights stored in fp16, or a text encoder whose config
    records float16, which transformers 5 honours): the Trainer's precision then decides what runs in
    16 bits. A weight that is inf or NaN (an fp16 overflow) is refused."""
    import torch

    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        module.to(torch.float32)
        bad = next((n for n, p in module.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise LabError(f"{path / name}: weight {bad} holds inf or NaN (fp16 weights that overflowed?)")


def stated_scaling_factor(folder: Path) -> bool:
    """True where the autoencoder's config.json states its latent scale."""
    try:
        return "scaling_factor" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return True  # unreadable configs are reported by the loader itself


def target_from_pipeline(pipe, path: Path | None = None, meta: dict | None = None) -> Target:
    """A loaded (or in-memory) DDPM/DDIM/LDM pipeline as a checked Target, without a split."""
    where = path or type(pipe).__name__
    kind = type(pipe).__name__
    if kind not in PIPELINES:
        raise LabError(f"{where}: a {kind}; supported pipelines: {', '.join(PIPELINES)}")
    unet, scheduler = getattr(pipe, "unet", None), getattr(pipe, "scheduler", None)
    denoiser = UNet2DConditionModel if kind == "StableDiffusionPipeline" else UNet2DModel
    if not isinstance(unet, denoiser):
        raise LabError(f"{where}: the denoiser is a {type(unet).__name__}; a {kind} needs a {denoiser.__name__}")
    if not hasattr(scheduler, "alphas_cumprod"):
        raise LabError(
            f"{where}: the scheduler {type(scheduler).__name__} has no alphas_cumprod (not a DDPM/DDIM schedule)"
        )
    if scheduler.config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise LabError(
            f"{where}: the denoiser predicts {scheduler.config.prediction_type!r}; "
            f"supported prediction types: {', '.join(PREDICTION_TYPES)}"
        )
    autoencoder = text_encoder = tokenizer = None
    if kind == "StableDiffusionPipeline":
        from lab.targets.text import check_text_encoder

        text_encoder, tokenizer = getattr(pipe, "text_encoder", None), getattr(pipe, "tokenizer", None)
        if (
            text_encoder is None
            or tokenizer is None
            or not hasattr(getattr(text_encoder, "config", None), "hidden_size")
        ):
            raise LabError(
                f"{where}: a text-to-image target needs a text encoder (text_encoder/) and a tokenizer (tokenizer/)"
            )
        check_text_encoder(unet, text_encoder, where)
        positions = getattr(text_encoder.config, "max_position_embeddings", None)
        length = getattr(tokenizer, "model_max_length", None)
        if not isinstance(length, int) or length < 2 or (positions is not None and length > positions):
            hint = " (a missing or damaged tokenizer/?)" if isinstance(length, int) and length > 10**6 else ""
            raise LabError(
                f"{where}: the tokenizer pads prompts to {length!r} tokens "
                f"but the text encoder takes at most {positions}{hint}"
            )
        vocab = getattr(text_encoder.config, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:
            raise LabError(
                f"{where}: the tokenizer has {len(tokenizer)} tokens but the text encoder embeds only {vocab}"
            )
        text_encoder = text_encoder.eval().requires_grad_(False)
    if kind in ("LDMPipeline", "StableDiffusionPipeline"):
        autoencoder = getattr(pipe, PIPELINES[kind], None)
        if not isinstance(autoencoder, (AutoencoderKL, VQModel)):
            raise LabError(
                f"{where}: the autoencoder is a {type(autoencoder).__name__}; supported: AutoencoderKL, VQModel"
            )
        if unet.config.in_channels != latent_channels(autoencoder):
            raise LabError(
                f"{where}: the UNet takes {unet.config.in_channels}-channel inputs but the autoencoder makes "
                f"{latent_channels(autoencoder)}-channel latents"
            )
        autoencoder = autoencoder.eval().requires_grad_(False)
    return Target(
        unet=unet.eval().requires_grad_(False),
        scheduler=scheduler,
        split=None,
        split_path=None,
        path=path,
        meta=meta or {},
        autoencoder=autoencoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def load_target(path: str | Path, split_file: str | Path | None = None) -> Target:
    """The target in a pipeline folder with its split (`split.json` beside it unless named)."""
    path = Path(path)
    target = load_pipeline(path)
    return target.with_split(Path(split_file) if split_file else path / "split.json")
