"""Training throughput: `lab.fit`'s module under a Lightning Trainer vs a bare PyTorch loop.

Both train the same UNet (same initial weights) on the same pre-made member batches; runs
alternate so that machine noise hits both. Prints images/s for each and lab / bare (goal >= 0.95).

    .venv/bin/python scripts/bench_fit.py [--epochs 10] [--repeats 3]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ddpm_mnist.yaml", help="fit config whose model and data to use")
    ap.add_argument("--epochs", type=int, default=10)
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

    bare, lab = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        bare_loop(copy.deepcopy(template), batches, 1)  # warm-up
        lab_loop(copy.deepcopy(template), batches, 1, log_dir)
        for _ in range(args.repeats):
            bare.append(images / bare_loop(copy.deepcopy(template), batches, args.epochs))
            lab.append(images / lab_loop(copy.deepcopy(template), batches, args.epochs, log_dir))
    b, l = statistics.median(bare), statistics.median(lab)
    params = sum(p.numel() for p in template.unet.parameters())
    print(f"UNet {params / 1e6:.2f}M params, {images} images per run, {args.repeats} runs each (median)")
    print(f"bare PyTorch loop : {b:8.1f} images/s")
    print(f"lab.fit module    : {l:8.1f} images/s")
    print(f"ratio lab / bare  : {l / b:8.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
