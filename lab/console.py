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


class Progress:
    """'k/N, ETA s' for a loop of N similar steps (each (target, attack) of lab.attack), one line per step."""

    def __init__(self, total: int):
        import time

        self.total, self.done, self.start, self._clock = total, 0, time.perf_counter(), time.perf_counter

    def step(self) -> str:
        self.done += 1
        elapsed = self._clock() - self.start
        left = elapsed / self.done * (self.total - self.done)
        return f"{self.done}/{self.total}, {elapsed:.0f} s, ETA {left:.0f} s"
