"""A quiet console: what a person at the keyboard needs, not the libraries' banners.

Lightning prints "GPU available / TPU available", a logger tip and "Seed set to" for every
Trainer (one per attack and export, from Python and notebooks too). They go to WARNING here; set
`logging.getLogger("lightning.pytorch").setLevel(logging.INFO)` after importing lab to see them.
"""

from __future__ import annotations

import logging

BANNERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed", "lightning.fabric.utilities.rank_zero")


def quiet_lightning() -> None:
    for name in BANNERS:
        logging.getLogger(name).setLevel(logging.WARNING)
