"""Load what an attack needs from a target folder on disk: a `Target` made by its family's adapter.

A target is a diffusers pipeline folder (model_index.json names its class, which picks the adapter in
`lab.targets.families`: pixel DDPM/DDIM, LDM, Stable Diffusion 1.x/2.x, SDXL), or a flat single-model
folder (config.json of a UNet2DModel at its root, as google/ddpm-cifar10-32), plus a membership split
file: `split.json` beside it, or one the user names or builds from member / non-member image
folders. Here is what every family shares: the folder's checks, which weights to read and how.
Weights are read from safetensors, or from `.bin` files with `torch.load(weights_only=True)`
(diffusers' loader), never as arbitrary pickles; an fp16-variant-only folder loads with that variant;
every module is upcast to float32 (the Trainer's precision decides what runs in 16 bits) and a weight
that overflowed to inf/NaN is refused; safety checkers, feature extractors and image encoders are never
loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from diffusers.utils import logging as diffusers_logging

from lab.errors import LabError
from lab.targets.families import PREDICTION_TYPES, for_pipeline
from lab.targets.families.pixel import is_flat
from lab.targets.target import Target
from lab.targets.weights import complete_weights

__all__ = ["PREDICTION_TYPES", "Target", "load_pipeline", "load_target", "target_from_pipeline", "target_folders"]

OPTIONAL_PARTS = ("safety_checker", "feature_extractor", "image_encoder")
COMPONENT_LIBRARIES = (
    "diffusers",
    "transformers",
    "stable_diffusion",
    None,
)  # of an SD folder: attacks never need them
FLAT_INDEX = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}


def is_pipeline_folder(path: Path) -> bool:
    """A diffusers pipeline folder (model_index.json), or a flat single-model one (config.json of a UNet2DModel)."""
    return (path / "model_index.json").is_file() or is_flat(path)


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
    if not (path / "model_index.json").is_file():
        return dict(FLAT_INDEX)  # a flat UNet2DModel folder is a DDPM pipeline
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
    """The target in a diffusers pipeline folder, checked by its family's adapter, without a split."""
    path = Path(path)
    index = pipeline_index(path)
    family = for_pipeline(index.get("_class_name"), path)
    from lab.console import quiet_transformers

    quiet_transformers()  # "Loading weights" bars of a text encoder
    diffusers_logging.disable_progress_bar()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # LDMPipeline types `vqvae` as VQModel; an AutoencoderKL there is fine
    options = {part: None for part in OPTIONAL_PARTS if part in index}
    variant = weight_variant(path, index)
    if variant:
        options["variant"] = variant
    try:
        with complete_weights(path):
            pipe = family.load(path, index, options)  # never the Hub
        upcast_and_check(pipe, path)  # under the quiet logger
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for missing/corrupt/unsafe files
        raise LabError(
            f"cannot load the diffusers pipeline in {path}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return family.target(pipe, path, read_meta(path))


WEIGHT_FILE = re.compile(
    r"^(diffusion_pytorch_model|model|pytorch_model)(?:-\d+-of-\d+)?(?:\.([A-Za-z0-9_]+))?\.(safetensors|bin)$"
)


def weight_variant(path: Path, index: dict) -> str | None:
    """The weights' variant ("fp16") where some component folder holds only variant files
    (`diffusion_pytorch_model.fp16.safetensors`), as Hub repositories with fp16 branches ship them."""
    variants = set()
    for name, value in index.items():
        folder = path if is_flat(path) else path / name
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
        tensors = [*module.parameters(), *module.buffers()]
        if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
            module.to(torch.float32)  # (load_pipeline silences diffusers' note on modules kept in float32)
        bad = next((n for n, p in module.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise LabError(f"{path / name}: weight {bad} holds inf or NaN (fp16 weights that overflowed?)")


def target_from_pipeline(pipe, path: Path | None = None, meta: dict | None = None) -> Target:
    """A loaded (or in-memory) pipeline as a checked Target of its family, without a split."""
    return for_pipeline(type(pipe).__name__, path or "the pipeline").target(pipe, path, meta)


def load_target(path: str | Path, split_file: str | Path | None = None) -> Target:
    """The target in a pipeline folder with its split (`split.json` beside it unless named)."""
    path = Path(path)
    target = load_pipeline(path)
    return target.with_split(Path(split_file) if split_file else path / "split.json")
