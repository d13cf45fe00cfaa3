"""Attack cost: denoiser calls and backward passes per example, examples/s, overhead over pure denoiser time.

For each attack, on the same target and the same batch: overhead = wall time of the attack's
`predict_step` / (calls per example x time of one batched denoiser forward, measured as the
per-call time of a run of back-to-back forwards); for gradient attacks the backward passes are
part of the cost, so their overhead is not a ratio to forwards alone and is not printed. Also
prints end-to-end examples/s through `trainer.predict` (Trainer start-up included) and one-off
setup calls (black-box sample generation). One run, one machine: the ratios are comparable,
the absolute numbers only here. Goal: overhead < 1.15.

    .venv/bin/python scripts/bench_attacks.py [--target checkpoints/ddpm_mnist/epoch_0100] [--batch 64] \\
        [--config configs/attack/all.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lab.attack import make_attacks, predict
from lab.callbacks import ScheduledExport
from lab.data import MembershipDataModule
from lab.targets import PixelDDPM
from lab.targets.load import load_target


def untrained_target(folder: Path):
    """Speed does not depend on training: export an untrained target of the main config's shape."""
    import lightning.pytorch as pl

    cfg = yaml.safe_load(open("configs/ddpm_mnist.yaml"))
    data = MembershipDataModule(**cfg["data"])
    model = PixelDDPM(**cfg["model"]["init_args"])
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        default_root_dir=folder,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ScheduledExport([1])],
    )
    trainer.fit(model, data)
    return load_target(folder / "epoch_0001")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default=None, help="a target folder (default: an untrained one of the main config)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="configs/attack/all.yaml", help="attack config to benchmark")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        target = load_target(args.target) if args.target else untrained_target(Path(tmp))
        data = MembershipDataModule.from_split_file(target.split_path)
        loader = torch.utils.data.DataLoader(data.dataset(), batch_size=args.batch)
        x0, rows = next(iter(loader))
        # Pure denoiser time: per-call time of 10 back-to-back forwards at varying timesteps (a lone
        # forward timed in a loop runs faster than one inside a sequence, which is what attacks make).
        ts = [torch.full((len(x0),), t) for t in range(0, 1000, 100)]
        with torch.inference_mode():
            forward = timed(lambda: [target.unet(x0, t).sample for t in ts], args.repeats) / len(ts)
        print(f"target {target.path.name}: batch {len(x0)}, denoiser forward {forward * 1e3:.1f} ms per batched call")
        print(
            f"{'attack':>15} {'calls/ex':>9} {'grads/ex':>9} {'setup calls':>12} "
            f"{'ex/s (step)':>12} {'ex/s (predict)':>15} {'overhead':>9}"
        )
        attacks = make_attacks(yaml.safe_load(Path(args.config).read_text())["attacks"])
        for name, attack in attacks.items():
            attack.bind(target)
            with torch.inference_mode(not attack.needs_grad):
                step = timed(lambda: attack.predict_step((x0, rows)), args.repeats)
                out = attack.predict_step((x0, rows))
            *_, speed = predict(attack, loader, {})
            calls, grads = out["calls"], out["grads"]
            overhead = f"{step / (calls * forward):9.3f}" if calls and not grads else f"{'-':>9}"
            print(
                f"{name:>15} {calls:9.1f} {grads:9.1f} {attack.setup_calls:12d} "
                f"{len(x0) / step:12.1f} {speed:15.1f} {overhead}"
            )


if __name__ == "__main__":
    main()
