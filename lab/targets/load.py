"""Load what an attack needs from a target folder on disk: denoiser, noise schedule, split.

A target is any diffusers `DDPMPipeline`/`DDIMPipeline` folder (the lab's own exports, or a
pretrained model saved locally) plus a membership split file: `split.json` beside it, or one
the user names. Weights are read from safetensors only, never from pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.utils import logging as diffusers_logging

from lab.data.split import MembershipSplit
from lab.errors import LabError

PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline")


@dataclass
class Target:
    unet: UNet2DModel
    scheduler: DDPMScheduler
    split: MembershipSplit
    split_path: Path
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def epoch(self) -> int | None:
        return self.meta.get("epoch")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        return (self.unet.config.in_channels, size, size)


def is_pipeline_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def target_folders(path: str | Path) -> list[Path]:
    """A pipeline folder, or a run folder holding several (e.g. epoch_0001, epoch_0100), sorted."""
    path = Path(path)
    if not path.is_dir():
        raise LabError(f"target folder not found: {path}")
    if is_pipeline_folder(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_pipeline_folder(p))
    if not found:
        raise LabError(f"{path} is no diffusers pipeline folder (no model_index.json) and holds none")
    return found


def load_target(path: str | Path, split_file: str | Path | None = None) -> Target:
    path = Path(path)
    if not is_pipeline_folder(path):
        raise LabError(f"{path} is no diffusers pipeline folder (no model_index.json)")
    kind = json.loads((path / "model_index.json").read_text()).get("_class_name")
    if kind not in PIXEL_PIPELINES:
        raise LabError(f"{path} holds a {kind}; supported pipelines: {', '.join(PIXEL_PIPELINES)}")
    split_path = Path(split_file) if split_file else path / "split.json"
    if not split_path.is_file():
        raise LabError(f"no membership split for target {path}: expected {split_path} (or pass --split FILE)")
    split = MembershipSplit.load(split_path)
    diffusers_logging.disable_progress_bar()
    try:
        pipe = DDPMPipeline.from_pretrained(path, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, EnvironmentError) as e:
        raise LabError(f"cannot load the diffusers pipeline in {path}: {e}") from None
    meta_path = path / "target.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    target = Target(pipe.unet.eval().requires_grad_(False), pipe.scheduler, split, split_path, path, meta)
    want = (split.preprocess["channels"], split.preprocess["image_size"], split.preprocess["image_size"])
    if target.image_shape != want:
        raise LabError(f"the split's images have shape {want} but the target {path} takes {target.image_shape}")
    return target
