"""Training throughput: `lab.fit` vs a bare PyTorch loop on the same UNet and member batches.

Three ways, interleaved so that machine noise hits all: a bare loop; `lab.fit`'s module under a
plain Trainer; and the real `python -m lab.fit` with a config's callbacks (exports, live MIA AUC,
sample grids, checkpoints, progress lines: `--config configs/study/ddpm_mnist_fit.yaml`, the
study's), timed over Lightning's fit loop so that start-up (parsing, data, model) is not counted.

Prints images/s for each and the ratios to the bare loop (goal >= 0.95): the median over repeats
of the ratio within each repeat (its ways timed back to back), with the per-repeat range. The
config's monitoring (live MIA AUC, sample grids) calls the denoiser for its own sake; its seconds
are timed and shown, with the ratio of the rest, so that what is left is the time lost around it.

    .venv/bin/python scripts/bench_fit.py [--config configs/study/ddpm_mnist_fit.yaml] [--epochs 700] \\
        [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml

from lab.console import quiet_lightning
from lab.data import MembershipDataModule
from lab.paths import resolve_config
from lab.targets import PixelDDPM


def bare_loop(model: PixelDDPM, batches: list[torch.Tensor], epochs: int) -> float:
    unet, scheduler = model.unet, model.scheduler
    opt = torch.optim.AdamW(unet.parameters(), lr=model.hparams.lr)
    unet.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for x0 in batches:
            noise = torch.randn_like(x0)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],))
            loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def lab_loop(model: PixelDDPM, batches: list[torch.Tensor], epochs: int, log_dir: str) -> float:
    loader = torch.utils.data.DataLoader([(x, torch.zeros(len(x))) for x in batches], batch_size=None)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=log_dir,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=4,
    )
    start = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - start


class Timers:
    """Seconds inside chosen methods, wrapped at class level for this process: the training step
    (Lightning's `optimizer_step`: forward, backward and the optimizer, as the bare loop does) and
    each callback's epoch-end hook. Read within one `lab.fit` run, their shares of its wall time
    do not depend on how loaded the machine was while it ran."""

    def __init__(self):
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loops.fit_loop import _FitLoop

        from lab.callbacks import MembershipAUC, SampleGrid, ScheduledExport

        self.seconds: dict[str, float] = {}
        self.wrap("fit loop", _FitLoop, "run")
        self.wrap("training step (forward, backward, optimizer)", PixelDDPM, "optimizer_step")
        self.wrap("live MIA AUC (denoiser calls)", MembershipAUC, "on_train_epoch_end")
        self.wrap("sample grids (denoiser calls)", SampleGrid, "on_train_epoch_end")
        self.wrap("checkpoints (last.ckpt)", ModelCheckpoint, "on_train_epoch_end")
        self.wrap("exports", ScheduledExport, "on_train_epoch_end")

    def wrap(self, name: str, cls: type, method: str) -> None:
        inner = getattr(cls, method)
        self.seconds[name] = 0.0

        def timed(*args, **kwargs):
            before = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - before

        setattr(cls, method, timed)

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


def cli_loop(config: str, epochs: int, root: str) -> None:
    """`python -m lab.fit --config <config>` for `epochs` epochs, in-process (timed by `Timers`)."""
    import shutil

    from lab import fit

    shutil.rmtree(root, ignore_errors=True)
    fit.main(["--config", config, "--trainer.default_root_dir", root, "--trainer.max_epochs", str(epochs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config",
        default="configs/study/ddpm_mnist_fit.yaml",
        help="fit config whose model, data and callbacks to use",
    )
    ap.add_argument(
        "--epochs", type=int, default=700, help="the study's own number by default: fixed costs amortise over it"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice, set explicitly)"
    )
    args = ap.parse_args()
    quiet_lightning()
    torch.set_num_threads(args.threads or torch.get_num_threads())  # explicit: every way runs on the same threads

    cfg = yaml.safe_load(open(resolve_config(args.config)))
    data = MembershipDataModule(**cfg["data"])
    model_args = {**cfg["model"]["init_args"], "image_size": data.image_shape[-1], "channels": data.image_shape[0]}
    torch.manual_seed(0)
    template = PixelDDPM(**model_args)
    gen = torch.Generator().manual_seed(0)
    members = data.images[data.split.select("member")]
    order = torch.randperm(len(members), generator=gen)
    batches = list(members[order].split(data.batch_size))
    images = sum(len(b) for b in batches) * args.epochs

    timers = Timers()
    bare, lab, cli, shares = [], [], [], []
    with tempfile.TemporaryDirectory() as log_dir:
        bare_loop(copy.deepcopy(template), batches, 1)  # warm-up
        lab_loop(copy.deepcopy(template), batches, 1, log_dir)
        for _ in range(args.repeats):  # interleaved: each repeat times every way back to back
            bare.append(bare_loop(copy.deepcopy(template), batches, args.epochs))
            lab.append(lab_loop(copy.deepcopy(template), batches, args.epochs, log_dir))
            before = timers.snapshot()
            cli_loop(args.config, args.epochs, f"{log_dir}/cli")
            took = {k: v - before[k] for k, v in timers.seconds.items()}
            cli.append(took.pop("fit loop"))  # Lightning's fit loop: start-up (parsing, data, model) not counted
            shares.append({k: v / cli[-1] for k, v in took.items()})
    params = sum(p.numel() for p in template.unet.parameters())

    def rate(seconds: list[float]) -> str:
        return f"{images / statistics.median(seconds):8.1f} images/s"

    def share(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} (repeats {min(values):.3f}-{max(values):.3f})"

    def ratio(seconds: list[float]) -> str:
        return share([b / s for b, s in zip(bare, seconds)])

    print(
        f"UNet {params / 1e6:.2f}M params, {images} images per run ({args.epochs} epochs), "
        f"{args.repeats} repeats, {torch.get_num_threads()} threads"
    )
    print(f"bare PyTorch loop            : {rate(bare)}")
    print(f"lab.fit module, plain Trainer: {rate(lab)}")
    print(f"python -m lab.fit ({args.config}): {rate(cli)}")
    print(f"ratio module / bare  : {ratio(lab)}")
    print(f"ratio lab.fit / bare : {ratio(cli)}  (goal >= 0.95; runs minutes apart, so machine load moves it)")
    print("within each python -m lab.fit run, share of its fit loop's wall time:")
    step = "training step (forward, backward, optimizer)"
    for name in shares[0]:
        print(f"  {name:45s}: {share([s[name] for s in shares])}")
    rest = [1 - sum(s.values()) for s in shares]
    print(f"  {'the rest (Lightning loop, data, logging)':45s}: {share(rest)}")
    monitoring = [
        s[step] / (1 - s["live MIA AUC (denoiser calls)"] - s["sample grids (denoiser calls)"]) for s in shares
    ]
    print(f"training step / wall time, the monitoring's own denoiser calls aside: {share(monitoring)}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
