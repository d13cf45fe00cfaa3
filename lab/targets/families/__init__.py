"""The model families the lab attacks and trains, one adapter module each (`lab.targets.families.base`).

    FAMILIES = {name: "module:Class"}      one line per family; modules import on first use

A pipeline folder's `_class_name` picks the adapter that declares it in its `pipelines`; a `Target`
built in memory without one gets the first family (from the most specific) that `claims` its parts.
"""

from __future__ import annotations

import importlib
from functools import cache

from lab.errors import LabError
from lab.targets.families.base import PREDICTION_TYPES, Family, ddim_images

FAMILIES = {
    "pixel": "pixel:PixelFamily",
    "latent": "latent:LatentFamily",
    "stable_diffusion": "stable_diffusion:StableDiffusionFamily",
    "sdxl": "sdxl:StableDiffusionXLFamily",
}

__all__ = ["FAMILIES", "PREDICTION_TYPES", "Family", "ddim_images", "family", "for_pipeline", "infer_family"]


@cache
def _class(name: str) -> type[Family]:
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(f"lab.targets.families.{module}"), cls)


def family(name: str, **config) -> Family:
    """The adapter called `name` (a key of FAMILIES)."""
    if name not in FAMILIES:
        raise LabError(f"unknown model family {name!r}; families: {', '.join(FAMILIES)}")
    return _class(name)(**config)


def for_pipeline(kind, where) -> Family:
    """The adapter of pipeline class `kind` (a model_index.json `_class_name`), or one LabError naming the
    supported families and their pipelines."""
    for name in FAMILIES:
        if isinstance(kind, str) and kind in _class(name).pipelines:
            return _class(name)()
    listed = "; ".join(f"{name} ({', '.join(_class(name).pipelines)})" for name in FAMILIES)
    raise LabError(
        f"{where} holds a {kind}, which no adapter of the lab takes; supported pipelines, by family: {listed}"
    )


def infer_family(target) -> Family:
    """The adapter of a Target built from its parts (the most specific family that claims them)."""
    for name in reversed(FAMILIES):
        if _class(name).claims(target):
            return _class(name)()
    raise LabError("no model family takes a target with these parts")
