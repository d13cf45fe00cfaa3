"""Refuse a checkpoint that does not hold every weight of the model it builds.

diffusers and transformers fill a weight missing from a saved checkpoint with a fresh random (or
uninitialised) tensor and only log a warning; a target with a damaged or mismatched folder would
then be attacked silently. `complete_weights` listens to both libraries' loading reports and turns
a missing or shape-mismatched weight into a LabError. Unused extra weights are ignored, as the
libraries ignore them.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

from lab.errors import LabError

LOADERS = ("diffusers.models.modeling_utils", "transformers.modeling_utils")
INCOMPLETE = ("newly initialized", "not initialized", "| MISSING", "| MISMATCH")


@contextmanager
def complete_weights(where):
    """Load models inside; a LabError if any of them lacks (or mis-shapes) a weight of its checkpoint."""
    found: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
            if any(k in message for k in INCOMPLETE):
                lines = [line.strip() for line in message.splitlines() if "MISSING" in line or "MISMATCH" in line]
                found.append(" ".join(" ".join(lines).split()) if lines else message.splitlines()[0])

    saved = []
    for name in LOADERS:
        log = logging.getLogger(name)
        handler = Capture()
        saved.append((log, log.level, log.propagate, handler))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False  # reported here as one error line, not printed
    try:
        yield
    finally:
        for log, level, propagate, handler in saved:
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate
    if found:
        raise LabError(
            f"{where}: the checkpoint lacks weights of its model ({found[0][:300]}): a damaged or mismatched folder"
        )
