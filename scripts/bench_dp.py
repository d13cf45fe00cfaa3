"""DP-SGD cost: images/s of DP vs non-DP training of the same UNet, and Opacus' two modes.

1. `lab.fit`'s module on the same members under a Lightning Trainer, without and with DP-SGD
   (functorch per-example gradients, 1 timestep per example), runs alternating: ratio DP / non-DP.
2. Opacus `grad_sample_mode` "hooks" vs "functorch" on the same UNet and batches: images/s of a
   DP-SGD step, and the largest error of their per-example gradients against autograd run one
   example at a time (the ground truth). The lab uses the mode that is right (and faster).

    .venv/bin/python scripts/bench_dp.py [--config configs/ddpm_mnist.yaml] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml
from opacus import PrivacyEngine

from lab.data import MembershipDataModule
from lab.targets import PixelDDPM
from lab.targets.dp import DPSGD

warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|many workers).*")


def fit_images_per_s(model: PixelDDPM, data: MembershipDataModule, epochs: int, log_dir: str) -> float:
    data.poisson_sampling = False
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=log_dir,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    members = len(data.split.select("member"))
    return members * epochs / (time.perf_counter() - start)


def diffusion_loss(unet, scheduler, x0, t, noise):
    return F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)


def opacus_mode(template: PixelDDPM, batches, mode: str) -> tuple[float, float]:
    """(images/s of DP-SGD steps, max |per-example grad - one-at-a-time autograd grad|)."""
    unet, scheduler = copy.deepcopy(template.unet), template.scheduler
    gen = torch.Generator().manual_seed(0)
    x0 = batches[0]
    t = torch.randint(0, 1000, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    truth = []
    for i in range(len(x0)):
        unet.zero_grad()
        diffusion_loss(unet, scheduler, x0[i : i + 1], t[i : i + 1], noise[i : i + 1]).backward()
        truth.append([p.grad.clone() for p in unet.parameters()])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(batches)), batch_size=len(x0))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    _, opt, _ = PrivacyEngine().make_private(
        module=unet,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=mode,
        wrap_model=False,
    )
    opt.zero_grad()
    diffusion_loss(unet, scheduler, x0, t, noise).backward()
    error = max(
        (p.grad_sample[i] - truth[i][j]).abs().max().item()
        for j, p in enumerate(unet.parameters())
        for i in range(len(x0))
    )
    opt.zero_grad()
    start = time.perf_counter()
    for x in batches:
        tt = torch.randint(0, 1000, (len(x),))
        diffusion_loss(unet, scheduler, x, tt, torch.randn_like(x)).backward()
        opt.step()
        opt.zero_grad()
    return sum(len(x) for x in batches) / (time.perf_counter() - start), error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ddpm_mnist.yaml", help="fit config whose model and data to use")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    cfg = yaml.safe_load(open(args.config))
    data = MembershipDataModule(**cfg["data"])
    init = {k: v for k, v in cfg["model"]["init_args"].items() if k != "dp"}
    model_args = {**init, "image_size": data.image_shape[-1], "channels": data.image_shape[0]}
    torch.manual_seed(0)
    template = PixelDDPM(**model_args)
    dp = DPSGD(enabled=True, noise_multiplier=1.0)

    plain, private = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.repeats):
            plain.append(fit_images_per_s(copy.deepcopy(template), data, args.epochs, log_dir))
            model = PixelDDPM(**model_args, dp=dp)
            model.load_state_dict(template.state_dict())
            private.append(fit_images_per_s(model, data, args.epochs, log_dir))
    p, d = statistics.median(plain), statistics.median(private)

    members = data.images[data.split.select("member")]
    batches = list(members.split(data.batch_size))
    modes = {mode: opacus_mode(template, batches, mode) for mode in ("functorch", "hooks")}

    params = sum(p.numel() for p in template.unet.parameters())
    print(
        f"UNet {params / 1e6:.2f}M params, {len(members)} members, batch {data.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} runs (median)"
    )
    print(f"lab.fit, no DP          : {p:8.1f} images/s")
    print(f"lab.fit, DP-SGD (K=1)   : {d:8.1f} images/s")
    print(f"ratio DP / no DP        : {d / p:8.3f}")
    for mode, (speed, error) in modes.items():
        print(f"opacus {mode:9s} step : {speed:8.1f} images/s, max per-example gradient error {error:.2e}")
    f, h = modes["functorch"][0], modes["hooks"][0]
    print(f"ratio functorch / hooks : {f / h:8.3f}")


if __name__ == "__main__":
    main()
