"""Membership-inference attacks, one module each, in one registry.

`REGISTRY` maps each config name to "module:Class" inside `lab.attacks`. Adding an attack is one line
here plus its module (and its tests); nothing is imported until an attack is used, as diffusers does
with `_import_structure`, so `--help` and the CLIs' parsers read the names without torch.
`ATTACKS[name]` is the class, imported on first use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping

from lab.errors import LabError

REGISTRY: dict[str, str] = {
    "loss": "loss:LossAttack",
    "multistep_loss": "multistep_loss:MultistepLossAttack",
    "pia": "pia:PIA",
    "pian": "pia:PIAN",
    "secmi_stat": "secmi:SecMIStat",
    "secmi_nn": "secmi:SecMINN",
    "pfami": "pfami:PFAMI",
    "pfami_nn": "pfami:PFAMINN",
    "gsa1": "gsa:GSA1",
    "gsa2": "gsa:GSA2",
    "gradient_norm": "gradient_norm:GradientNorm",
    "reconstruction": "reconstruction:Reconstruction",
    "graybox": "graybox:GrayBox",
    "blackbox": "blackbox:BlackBox",
    "blind": "blind:Blind",
    "lira": "lira:LiRA",
    "rmia": "rmia:RMIA",
    "sima": "sima:SimA",
    "clid": "clid:CLiD",
    "clid_th": "clid_learned:CLiDTh",
    "clid_vec": "clid_learned:CLiDVec",
}
ATTACK_NAMES = tuple(REGISTRY)  # what the CLIs' --help and parsers show


def _resolve(spec: str) -> type:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(f"lab.attacks.{module}"), cls)


class _Attacks(Mapping):
    """name -> attack class, each imported when first asked for."""

    def __getitem__(self, name: str) -> type:
        return _resolve(REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


ATTACKS: Mapping[str, type] = _Attacks()
_CLASSES = {spec.split(":")[1]: spec for spec in REGISTRY.values()} | {
    "Attack": "base:Attack",
    "LearnedAttack": "base:LearnedAttack",
}


def __getattr__(name: str):
    """`from lab.attacks import PIA, Attack`: the classes by name, imported on first use."""
    if name in _CLASSES:
        return _resolve(_CLASSES[name])
    raise AttributeError(f"module 'lab.attacks' has no attribute {name!r}")


def make_attacks(spec: dict | list) -> dict:
    """`{name: settings}` (or a list of names) -> attacks. A key may carry a label: 'pia/t100'."""
    spec = {name: {} for name in spec} if isinstance(spec, list) else spec
    attacks = {}
    for key, settings in spec.items():
        name = key.split("/")[0]
        if name not in REGISTRY:
            raise LabError(f"unknown attack {name!r}; valid attacks: {', '.join(REGISTRY)}")
        if settings is not None and not isinstance(settings, dict):
            raise LabError(f"attack {key!r}: settings must be a mapping of names to values, got {settings!r}")
        try:
            attacks[key] = ATTACKS[name](**(settings or {}))
        except (TypeError, ValueError) as e:  # a misspelt setting, or a value of the wrong kind ('abc' for a timestep)
            reason = re.sub(r"^[\w.]*__init__\(\) ", "", str(e))
            raise LabError(f"attack {key!r}: {reason}") from None
    if not attacks:
        raise LabError("no attacks given")
    return attacks


def sweep_timesteps(spec: dict | list, timesteps: list[int] | None) -> dict:
    """Each single-timestep attack (loss, pia, pian, sima) once per t, labelled `<key>/t<t>`;
    the other attacks as they are. The denoiser calls per example stay each attack's own."""
    spec = {name: {} for name in spec} if isinstance(spec, list) else dict(spec)
    if not timesteps:
        return spec
    out = {}
    for key, settings in spec.items():
        name = key.split("/")[0]
        setting = getattr(ATTACKS[name], "sweep_setting", None) if name in REGISTRY else None
        if setting is None:
            out[key] = settings
            continue
        for t in timesteps:
            out[f"{key}/t{t}"] = {**(settings or {}), setting: [t] if setting == "timesteps" else t}
    return out


__all__ = ["ATTACKS", "ATTACK_NAMES", "REGISTRY", "make_attacks", "sweep_timesteps", *_CLASSES]
