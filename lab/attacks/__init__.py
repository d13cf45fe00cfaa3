"""Membership-inference attacks, one module each; `ATTACKS` maps config names to classes."""

from lab.attacks.base import Attack, LearnedAttack
from lab.attacks.loss import LossAttack
from lab.attacks.multistep_loss import MultistepLossAttack
from lab.attacks.pia import PIA, PIAN
from lab.attacks.secmi import SecMINN, SecMIStat

ATTACKS: dict[str, type[Attack]] = {
    "loss": LossAttack,
    "multistep_loss": MultistepLossAttack,
    "pia": PIA,
    "pian": PIAN,
    "secmi_stat": SecMIStat,
    "secmi_nn": SecMINN,
}

__all__ = ["ATTACKS", "Attack", "LearnedAttack", "LossAttack", "MultistepLossAttack", "PIA", "PIAN", "SecMINN", "SecMIStat"]
