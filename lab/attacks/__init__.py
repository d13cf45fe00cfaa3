"""Membership-inference attacks, one module each; `ATTACKS` maps config names to classes."""

import re

from lab.attacks.base import Attack, LearnedAttack
from lab.attacks.blackbox import BlackBox
from lab.attacks.blind import Blind
from lab.attacks.clid import CLiD
from lab.attacks.clid_learned import CLiDTh, CLiDVec
from lab.attacks.gradient_norm import GradientNorm
from lab.attacks.graybox import GrayBox
from lab.attacks.gsa import GSA1, GSA2
from lab.attacks.lira import LiRA
from lab.attacks.loss import LossAttack
from lab.attacks.multistep_loss import MultistepLossAttack
from lab.attacks.pfami import PFAMI, PFAMINN
from lab.attacks.pia import PIA, PIAN
from lab.attacks.reconstruction import Reconstruction
from lab.attacks.rmia import RMIA
from lab.attacks.secmi import SecMINN, SecMIStat
from lab.attacks.sima import SimA
from lab.errors import LabError

ATTACKS: dict[str, type[Attack]] = {
    "loss": LossAttack,
    "multistep_loss": MultistepLossAttack,
    "pia": PIA,
    "pian": PIAN,
    "secmi_stat": SecMIStat,
    "secmi_nn": SecMINN,
    "pfami": PFAMI,
    "pfami_nn": PFAMINN,
    "gsa1": GSA1,
    "gsa2": GSA2,
    "gradient_norm": GradientNorm,
    "reconstruction": Reconstruction,
    "graybox": GrayBox,
    "blackbox": BlackBox,
    "blind": Blind,
    "lira": LiRA,
    "rmia": RMIA,
    "sima": SimA,
    "clid": CLiD,
    "clid_th": CLiDTh,
    "clid_vec": CLiDVec,
}


def make_attacks(spec: dict | list) -> dict[str, Attack]:
    """`{name: settings}` (or a list of names) -> attacks. A key may carry a label: 'pia/t100'."""
    spec = {name: {} for name in spec} if isinstance(spec, list) else spec
    attacks = {}
    for key, settings in spec.items():
        name = key.split("/")[0]
        if name not in ATTACKS:
            raise LabError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")
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
        setting = getattr(ATTACKS.get(key.split("/")[0]), "sweep_setting", None)
        if setting is None:
            out[key] = settings
            continue
        for t in timesteps:
            out[f"{key}/t{t}"] = {**(settings or {}), setting: [t] if setting == "timesteps" else t}
    return out


__all__ = [
    "ATTACKS", "make_attacks", "sweep_timesteps", "Attack", "LearnedAttack", "BlackBox", "Blind", "GradientNorm", "GrayBox", "GSA1", "GSA2", "LiRA",
    "LossAttack", "MultistepLossAttack", "PFAMI", "PFAMINN", "PIA", "PIAN", "Reconstruction", "RMIA", "SecMINN", "SecMIStat", "SimA",
]
