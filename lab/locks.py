"""One writer per folder: a run folder (`lab.fit`), an output folder (`lab.attack`), a study (`lab.study`).

Two runs writing into one folder lose or mix each other's results; the second one stops with a
clear error instead. The lock is `filelock`'s (an OS file lock on `<folder>/.lab.lock`): the
operating system releases it when its process ends, even by SIGKILL, so a killed run never
leaves a stale lock behind. Under DDP only the process of global rank 0 holds it (the other
ranks write nothing of their own).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lab.errors import LabError

LOCK_FILE = ".lab.lock"


@contextmanager
def folder_lock(folder: str | Path, what: str):
    """Hold `folder`'s lock for the block, or raise LabError at once if another process holds it."""
    if rank_zero_only.rank != 0:
        yield
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK_FILE), timeout=0, is_singleton=False)
        lock.acquire()
    except Timeout:
        raise LabError(
            f"another {what} is writing into {folder} (it holds {folder / LOCK_FILE}): "
            "wait for it, or use another folder"
        ) from None
    except OSError as e:
        raise LabError(f"cannot write into {folder}: {e.strerror or e}") from None
    try:
        yield
    finally:
        lock.release()
