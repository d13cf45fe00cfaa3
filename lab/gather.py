"""Gather what an attack scored on every process, each example exactly once (Lightning DDP).

Under DDP each rank predicts its shard of the examples; `DistributedSampler` may repeat some to
even the shards. `ShardWriter` (Lightning's `BasePredictionWriter`) saves each rank's rows and
values as safetensors in one folder (rank 0's, broadcast at setup, so that `ddp`'s re-launched
processes and `ddp_spawn`'s workers agree); after `trainer.predict`, rank 0 merges the shards and
keeps one value per split row. A single process is the same path with one shard.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.torch import load_file, save_file


class ShardWriter(BasePredictionWriter):
    def __init__(self, directory: str | Path):
        super().__init__(write_interval="batch")
        self.directory = str(directory)
        self.outputs: list[dict] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.directory = trainer.strategy.broadcast(self.directory)
        self.outputs = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.outputs.append(prediction)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        o = self.outputs
        n = torch.tensor([len(p["rows"]) for p in o], dtype=torch.float64)
        shard = {
            "rows": torch.cat([p["rows"] for p in o]) if o else torch.zeros(0, dtype=torch.long),
            "values": torch.cat([p["values"] for p in o]) if o else torch.zeros(0),
            "calls": (torch.tensor([p["calls"] for p in o], dtype=torch.float64) * n).sum().reshape(1),
            "grads": (torch.tensor([p["grads"] for p in o], dtype=torch.float64) * n).sum().reshape(1),
            "reused": (torch.tensor([p.get("reused", 0.0) for p in o], dtype=torch.float64) * n).sum().reshape(1),
        }
        path = Path(self.directory) / f"rank_{trainer.global_rank}.safetensors"
        save_file({k: v.contiguous() for k, v in shard.items()}, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        self.outputs = []
        trainer.strategy.barrier()  # every shard is on disk before rank 0 merges


def merge_shards(directory: str | Path) -> tuple[np.ndarray, torch.Tensor, float, float, float]:
    """(rows, values, calls per example, backward passes per example, calls reused per example), one
    entry per distinct row, sorted."""
    shards = [load_file(p) for p in sorted(Path(directory).glob("rank_*.safetensors"))]
    rows = torch.cat([s["rows"] for s in shards])
    values = torch.cat([s["values"] for s in shards])
    scored = len(rows)
    calls = float(sum(s["calls"].item() for s in shards)) / max(scored, 1)
    grads = float(sum(s["grads"].item() for s in shards)) / max(scored, 1)
    reused = float(sum(s["reused"].item() for s in shards)) / max(scored, 1)
    order = torch.argsort(rows, stable=True)
    rows, values = rows[order], values[order]
    first = torch.ones(len(rows), dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]  # a row a padded shard scored twice is kept once
    return rows[first].numpy(), values[first], calls, grads, reused
