"""A quiet console: what a person at the keyboard needs, not the libraries' banners.

Lightning prints "GPU available / TPU available", a logger tip and "Seed set to" for every
Trainer (one per attack and export, from Python and notebooks too), "LOCAL_RANK: 0 -
CUDA_VISIBLE_DEVICES" on a GPU, and warnings that do not apply to the lab's in-memory tensor data
("does not have many workers"), to a CPU run chosen on a GPU machine ("GPU available but not
used") or to a fit with fewer batches per epoch than its logging interval (the epoch's loss is
logged anyway). They go to WARNING here; set `logging.getLogger("lightning.pytorch").setLevel(logging.INFO)`
after importing lab to see the banners.
"""

from __future__ import annotations

import logging

BANNERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
NOT_APPLICABLE = (
    ".*does not have many workers.*",
    "GPU available but not used.*",
    # a fit of few batches per epoch: the lab logs the epoch's loss anyway (on_epoch), and step logs span epochs
    ".*is smaller than the logging interval.*",
)


def quiet_lightning() -> None:
    import warnings

    for name in BANNERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in NOT_APPLICABLE:
        warnings.filterwarnings("ignore", message=message)
    quiet_transformers()


def quiet_transformers() -> None:
    """transformers' notices (torchvision missing for image processors it never uses here) and its
    'Writing model shards' bar, when it is installed (text-to-image targets)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


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
