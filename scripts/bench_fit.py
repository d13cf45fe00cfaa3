"""Training throughput: `lab.fit` vs a bare PyTorch loop on the same UNet and member batches.

Three ways, alternating so that machine noise hits all: a bare loop; `lab.fit`'s module under a
plain Trainer; and the real `python -m lab.fit` with a config's callbacks (exports, live MIA AUC,
sample grids, checkpoints, progress lines: `--config configs/study/ddpm_mnist_fit.yaml`, the
study's), timed as T(epochs) - T(0 epochs) so that start-up (parsing, data) is not counted.
Prints images/s for each and the ratios to the bare loop (goal >= 0.95).

    .venv/bin/python scripts/bench_fit.py [--config configs/study/ddpm_mnist_fit.yaml] [--epochs 100] [--repeats 3]
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

from lab.data import MembershipDataModule
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


def cli_loop(config: str, epochs: int, root: str) -> float:
    """Wall seconds of `python -m lab.fit --config <config>` for `epochs` epochs, in-process."""
    import shutil

    from lab import fit

    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    fit.main(["--config", config, "--trainer.default_root_dir", root, "--trainer.max_epochs", str(epochs)])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/study/ddpm_mnist_fit.yaml", help="fit config whose model, data and callbacks to use")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cfg = yaml.safe_load(open(args.config))
    data = MembershipDataModule(**cfg["data"])
    model_args = {**cfg["model"]["init_args"], "image_size": data.image_shape[-1], "channels": data.image_shape[0]}
    torch.manual_seed(0)
    template = PixelDDPM(**model_args)
    gen = torch.Generator().manual_seed(0)
    members = data.images[data.split.select("member")]
    order = torch.randperm(len(members), generator=gen)
    batches = list(members[order].split(data.batch_size))
    images = sum(len(b) for b in batches) * args.epochs

    torch.set_num_threads(torch.get_num_threads())  # explicit: every way runs on the same threads
    bare, lab, cli = [], [], []
    with tempfile.TemporaryDirectory() as log_dir:
        bare_loop(copy.deepcopy(template), batches, 1)  # warm-up
        lab_loop(copy.deepcopy(template), batches, 1, log_dir)
        for _ in range(args.repeats):
            bare.append(images / bare_loop(copy.deepcopy(template), batches, args.epochs))
            lab.append(images / lab_loop(copy.deepcopy(template), batches, args.epochs, log_dir))
            startup = cli_loop(args.config, 0, f"{log_dir}/cli")
            cli.append(images / max(cli_loop(args.config, args.epochs, f"{log_dir}/cli") - startup, 1e-9))
    b, l, c = statistics.median(bare), statistics.median(lab), statistics.median(cli)
    params = sum(p.numel() for p in template.unet.parameters())
    spread = lambda xs: f"(runs {min(xs):.0f}-{max(xs):.0f})"
    print(f"UNet {params / 1e6:.2f}M params, {images} images per run, {args.repeats} runs each (median), {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop           : {b:8.1f} images/s {spread(bare)}")
    print(f"lab.fit module, plain Trainer: {l:8.1f} images/s {spread(lab)}")
    print(f"python -m lab.fit ({args.config}): {c:8.1f} images/s {spread(cli)}")
    print(f"ratio module / bare  : {l / b:8.3f}")
    print(f"ratio lab.fit / bare : {c / b:8.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
