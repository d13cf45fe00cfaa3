"""Lightning callbacks for fitting targets: scheduled export, sample grids and live MIA success."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from lab import metrics
from lab.data.datamodule import SPLIT_FILE
from lab.errors import LabError, check_number

TARGET_META = "target.json"


def export_dir(root: str | Path, epoch: int) -> Path:
    return Path(root) / f"epoch_{epoch:04d}"


def _jsonable(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


class ScheduledExport(pl.Callback):
    """Export the target at chosen epochs (1-based), e.g. [1, 10, 100, 1000].

    Over-training studies need the target along the way, not only at the end. Each export
    is a folder `<dirpath>/epoch_NNNN/` in the diffusers layout plus `split.json` (the ground
    truth) and `target.json` (epoch, step, hyper-parameters). Folders are built under a
    temporary name and renamed into place, so an interrupted run leaves no half-written one.
    """

    def __init__(self, epochs: list[int] | None = None, dirpath: str | None = None, export_last: bool = True):
        for e in epochs or []:
            check_number("ScheduledExport epochs (1-based)", e, minimum=1, integer=True)
        self.epochs = sorted(set(epochs or []))
        self.dirpath, self.export_last = dirpath, export_last

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remove half-built exports a killed run left behind (never listed as targets)."""
        if trainer.is_global_zero:
            for stale in Path(self.dirpath or trainer.default_root_dir).glob("epoch_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = self.export_last and epoch == trainer.max_epochs
        if (epoch in self.epochs or last) and trainer.is_global_zero:
            self.export(trainer, pl_module, epoch)

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> Path:
        root = Path(self.dirpath or trainer.default_root_dir)
        final = export_dir(root, epoch)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        pl_module.export(tmp)
        shutil.copyfile(root / SPLIT_FILE, tmp / SPLIT_FILE)
        loss = trainer.callback_metrics.get("train/loss_epoch")
        meta = {
            "target_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "epoch": epoch,
            "global_step": trainer.global_step,
            "train_loss_epoch": float(loss) if loss is not None else None,
            "hparams": json.loads(json.dumps(dict(pl_module.hparams), default=_jsonable)),
            "split_fingerprint": trainer.datamodule.split.fingerprint(),
        }
        meta.update(pl_module.export_meta())
        (tmp / TARGET_META).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final


class ProgressLines(pl.Callback):
    """One line every few epochs (about 20 a fit) with the loss, the time taken and an ETA: what
    `lab.fit` shows instead of a redrawn progress bar when its output is not a terminal (a log
    file, CI, SLURM), where a bar leaves a carriage return per step."""

    def __init__(self, lines: int = 20):
        self.lines = lines

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        self.start, self.first_epoch = time.perf_counter(), trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        every = max(1, (total or 1) // self.lines) if total and total > 0 else 1
        if not trainer.is_global_zero or (epoch % every and epoch != total):
            return
        elapsed = time.perf_counter() - self.start
        done = epoch - self.first_epoch
        eta = elapsed / done * (total - epoch) if total and total > 0 and done else float("nan")
        loss = trainer.callback_metrics.get("train/loss_epoch")
        loss = f"loss {float(loss):.4f}, " if loss is not None else ""
        root = Path(trainer.default_root_dir).name
        print(f"[{root}] epoch {epoch}/{total}: {loss}{elapsed:.0f} s, ETA {eta:.0f} s", flush=True)


class SampleGrid(pl.Callback):
    """Log a grid of DDIM samples (fixed seed, few steps) to TensorBoard every N epochs."""

    def __init__(self, every_n_epochs: int = 10, num_images: int = 16, steps: int = 20, seed: int = 0):
        self.every_n_epochs, self.num_images, self.steps, self.seed = every_n_epochs, num_images, steps, seed

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs <= 0 or (epoch % self.every_n_epochs and epoch != trainer.max_epochs):
            return
        writer = getattr(trainer.logger, "experiment", None)
        if not trainer.is_global_zero or not hasattr(writer, "add_images"):
            return
        images = pl_module.sample(self.num_images, steps=self.steps, seed=self.seed)
        writer.add_images("samples", torch.from_numpy(images), global_step=epoch, dataformats="NHWC")
        if hasattr(pl_module, "sample_prompts"):  # text-to-image: the prompts of the grid, in order
            prompts = pl_module.sample_prompts(self.num_images)
            writer.add_text(
                "samples/prompts", "\n".join(f"{i}. {p}" for i, p in enumerate(prompts, 1)), global_step=epoch
            )


class MembershipAUC(pl.Callback):
    """Watch leakage grow: attack the model being trained every N epochs, on the validation split.

    Logs `mia/<attack>/auc` and `mia/<attack>/tpr@1%fpr` (NaN while the split has fewer than 100
    validation non-members) next to the training loss. Attacks are the lab's own (`lab.attack`
    names and settings); learned attacks are refused here, since they need the test split to
    be scored honestly. The weights attacked are the ones an export would release (the EMA, if kept).
    """

    def __init__(self, attacks: dict | list | None = None, every_n_epochs: int = 10, batch_size: int = 64):
        from lab.attacks import make_attacks

        self.attacks = make_attacks(attacks or ["pia"])
        learned = [k for k, a in self.attacks.items() if a.learned]
        if learned:
            raise LabError(f"MembershipAUC runs threshold-free attacks only; {', '.join(learned)} learn from labels")
        self.every_n_epochs, self.batch_size = every_n_epochs, batch_size

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Register the hyper-parameters with the live MIA metrics in TensorBoard's HParams tab, so
        that runs (seeds, DP settings, sizes) compare by their leakage, not by a placeholder."""
        from lightning.pytorch.loggers import TensorBoardLogger
        from torch.utils.tensorboard.summary import hparams

        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in pl_module.hparams.items()}
        metrics = {f"mia/{key}/{m}": 0.0 for key in self.attacks for m in ("auc", "tpr@1%fpr")}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams writes them
                for summary in hparams(params, metrics):
                    writer.add_summary(summary)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch not in (1, trainer.max_epochs):
            return
        dm = trainer.datamodule
        loader = torch.utils.data.DataLoader(dm.dataset(eval_split="validation"), batch_size=self.batch_size)
        is_member = np.array([dm.split.roles[r] == "member" for r in dm.split.select(eval_split="validation")])
        unet = pl_module.target_unet
        was_training, grads = unet.training, [p.requires_grad for p in unet.parameters()]
        target = pl_module.attack_target(dm.split)  # path None: no caches of a moving target
        try:
            with torch.inference_mode():
                for key, attack in self.attacks.items():
                    attack.bind(target).to(pl_module.device)
                    out = [attack.predict_step((x.to(pl_module.device), rows)) for x, rows in loader]
                    values, rows = torch.cat([o["values"] for o in out]), torch.cat([o["rows"] for o in out]).numpy()
                    result = metrics.summary(attack.finalize(values, rows, dm.split), is_member)
                    live = {f"mia/{key}/auc": result["auc"], f"mia/{key}/tpr@1%fpr": result["tpr@0.01fpr"]}
                    # stepped by epoch, as lab.attack's scalars of each export are: one x-axis in TensorBoard
                    for logger in trainer.loggers:
                        logger.log_metrics(live, step=epoch)
                    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in live.items()})
        finally:
            unet.train(was_training)
            for p, g in zip(unet.parameters(), grads):
                p.requires_grad_(g)
