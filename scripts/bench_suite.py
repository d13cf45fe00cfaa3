"""The benchmark suite: one table of ratios, every figure measured in this run on this machine.

    .venv/bin/python scripts/bench_suite.py --quick    # under 2 minutes on 2 CPU cores
    .venv/bin/python scripts/bench_suite.py            # longer runs, every attack

Figures (each a ratio of two measurements taken here, now):
- training: lab / bare -- images/s of lab.fit's module under a Trainer vs a bare PyTorch loop,
  same UNet and batches (goal >= 0.95);
- training: DP / no DP -- DP-SGD (Opacus, functorch, K = 1) vs plain training of the same module;
- attack overhead -- predict_step wall time / (calls per example x one batched denoiser forward)
  (goal < 1.15), with examples/s through trainer.predict and the peak memory the step adds above
  the loaded target at the default batch size (resident set on CPU, allocator peak on CUDA);
- growth -- time for 4n examples / (4 x time for n), and at 4x the calls per example (1 = linear);
- DDP -- an attack's time in 1 process / in 2 DDP processes (gloo), with and without start-up.

Each ratio is the median over repeats in which its two sides are timed back to back (interleaved,
so that load on the machine hits both), with the spread of the per-repeat ratios; torch's threads
are set explicitly (`--threads`; 2 threads on a loaded 2-core machine thrash). An overhead can not
really be below 1 (the step makes those very forwards): a ratio under 1 means the reference was
timed slow, and is reported as 1.00 with the raw value beside it.

The detailed scripts (`bench_fit.py`, `bench_dp.py`, `bench_attacks.py`) print more about each.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from bench_attacks import timed, untrained_target
from bench_dp import fit_images_per_s
from bench_fit import bare_loop, lab_loop

from lab.attack import make_attacks, predict
from lab.data import MembershipDataModule
from lab.targets import PixelDDPM
from lab.targets.dp import DPSGD

MAIN_CONFIG = "configs/ddpm_mnist.yaml"


def peak_memory_mb(fn) -> float:
    """Peak memory `fn` adds: CUDA's allocator peak, or the process's resident-set high-water mark on Linux."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    status = Path("/proc/self/status")
    if not status.is_file():
        return float("nan")
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so that reusing them counts again
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set

    def kb(field: str) -> int:
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith(field))

    base = kb("VmRSS:")
    fn()
    return (kb("VmHWM:") - base) / 1024


def training_rows(quick: bool) -> list[tuple]:
    cfg = yaml.safe_load(open(MAIN_CONFIG))
    data = MembershipDataModule(**cfg["data"])
    args = {**cfg["model"]["init_args"], "image_size": data.image_shape[-1], "channels": data.image_shape[0]}
    torch.manual_seed(0)
    template = PixelDDPM(**args)
    members = data.images[data.split.select("member")]
    batches = list(
        members[torch.randperm(len(members), generator=torch.Generator().manual_seed(0))].split(data.batch_size)
    )
    epochs, repeats = (1, 3) if quick else (5, 3)
    images = len(members) * epochs
    ratios, bares, labs = [], [], []
    with tempfile.TemporaryDirectory() as log_dir:
        bare_loop(copy.deepcopy(template), batches, 1)  # warm-up
        lab_loop(copy.deepcopy(template), batches, 1, log_dir)
        for _ in range(repeats):  # interleaved: each repeat times both, back to back
            bares.append(images / bare_loop(copy.deepcopy(template), batches, epochs))
            labs.append(images / lab_loop(copy.deepcopy(template), batches, epochs, log_dir))
            ratios.append(labs[-1] / bares[-1])
        plain = fit_images_per_s(copy.deepcopy(template), data, 1 if quick else 3, log_dir)
        private = PixelDDPM(**args, dp=DPSGD(enabled=True, noise_multiplier=1.0))
        private.load_state_dict(template.state_dict())
        dp = fit_images_per_s(private, data, 1 if quick else 3, log_dir)
    return [
        (
            "training: lab / bare loop",
            statistics.median(ratios),
            ">= 0.95",
            f"{statistics.median(labs):.0f} vs {statistics.median(bares):.0f} images/s; {spread(ratios)}",
        ),
        ("training: DP-SGD / no DP", dp / plain, "cost", f"{dp:.0f} vs {plain:.0f} images/s"),
    ]


def spread(ratios: list[float]) -> str:
    return f"{len(ratios)} repeats, ratios {min(ratios):.3f}-{max(ratios):.3f}"


def floored(ratio: float, floor: float = 1.0) -> tuple[float, str]:
    """An overhead below its floor is a slow reference, not a fast attack: the floor, and the raw value."""
    return (floor, f" (raw {ratio:.3f}: reference timed slow)") if ratio < floor else (ratio, "")


def attack_rows(target, loader, names: list[str], repeats: int) -> list[tuple]:
    x0, rows = next(iter(loader))
    steps = [torch.full((len(x0),), t) for t in range(0, 1000, 100)]

    def forward():
        with torch.inference_mode():
            [target.unet(x0, t).sample for t in steps]

    out = []
    for name, attack in make_attacks(names).items():
        attack.bind(target)

        def step():
            with torch.inference_mode(not attack.needs_grad):
                return attack.predict_step((x0, rows))

        result = step()  # warm-up, and the calls it makes
        forward()
        calls, grads = result["calls"], result["grads"]
        ratios = []
        for _ in range(max(repeats, 3)):  # interleaved: the reference forward and the step, back to back
            f = timed(forward, 1) / len(steps)
            ratios.append(timed(step, 1) / (calls * f) if calls and not grads else float("nan"))
        memory = peak_memory_mb(step)
        *_, speed = predict(attack, loader, {})
        overhead, note = floored(statistics.median(ratios)) if calls and not grads else (float("nan"), "")
        detail = (
            f"{calls:.0f} calls/ex, {grads:.0f} grads/ex, {speed:.0f} ex/s, peak +{memory:.0f} MB at batch {len(x0)}"
            + (f"; {spread(ratios)}{note}" if calls and not grads else "")
        )
        goal = "n/a (backward)" if grads else "< 1.15" if calls else "n/a (0 calls)"
        out.append((f"attack {name}: overhead", overhead, goal, detail))
    return out


def growth_rows(target, dataset, batch: int, repeats: int) -> list[tuple]:
    attack = make_attacks(["pia"])["pia"].bind(target)
    n = len(dataset) // 4

    def run(count: int):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=batch)
        with torch.inference_mode():
            for x, r in loader:
                attack.predict_step((x, r))

    small, large = timed(lambda: run(n), repeats), timed(lambda: run(4 * n), repeats)
    x0, rows = next(iter(torch.utils.data.DataLoader(dataset, batch_size=batch)))
    losses = {k: make_attacks({"loss": {"num_noise": k}})["loss"].bind(target) for k in (2, 8)}
    with torch.inference_mode():
        few, many = (timed(lambda a=losses[k]: a.predict_step((x0, rows)), repeats) for k in (2, 8))
    return [
        (
            f"growth: {4 * n} vs {n} examples (pia)",
            large / (4 * small),
            "~1 (linear)",
            f"{small:.2f} s vs {large:.2f} s",
        ),
        ("growth: 32 vs 8 calls/ex (loss)", many / (4 * few), "~1 (linear)", f"{few:.2f} s vs {many:.2f} s"),
    ]


def ddp_rows(target, dataset, batch: int) -> list[tuple]:
    """secmi_stat (11 calls/ex) on every example in 1 process vs 2 DDP processes; DDP's start-up is
    measured on 2 examples and also subtracted, to show the scaling of the work itself."""
    attack = make_attacks(["secmi_stat"])["secmi_stat"]
    ddp = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}

    def timed_predict(data, kwargs) -> float:  # seconds through trainer.predict
        return (
            len(data) / predict(attack.bind(target), torch.utils.data.DataLoader(data, batch_size=batch), kwargs)[-1]
        )

    one = timed_predict(dataset, {"accelerator": "cpu", "devices": 1})
    two = timed_predict(dataset, ddp)
    start_up = timed_predict(torch.utils.data.Subset(dataset, range(2)), ddp)
    n = len(dataset)
    return [
        (
            "DDP: 2 processes / 1, with start-up",
            one / two,
            "scaling",
            f"{n / two:.0f} vs {n / one:.0f} ex/s, {n} examples",
        ),
        (
            "DDP: 2 processes / 1, start-up excluded",
            one / (two - start_up),
            "scaling",
            f"start-up {start_up:.1f} s; 2 cores here",
        ),
    ]


HEADER = ("figure", "ratio", "goal", "measured")


def format_row(row: tuple) -> str:
    name, ratio, goal, detail = row
    return f"{name:<42}  {ratio if isinstance(ratio, str) else f'{ratio:.3f}':>7}  {goal:<16}  {detail}"


def print_rows(rows: list[tuple], header: bool = False) -> None:
    """Each section as it is measured (the whole table is printed again at the end)."""
    print("\n".join(format_row(r) for r in ([HEADER] if header else []) + rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small runs: under 2 minutes on 2 CPU cores")
    ap.add_argument("--batch", type=int, default=64, help="attack batch size (lab.attack's default)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice, set explicitly)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    start = time.perf_counter()
    repeats = 1 if args.quick else 3
    table = training_rows(args.quick)
    print_rows(table, header=True)
    with tempfile.TemporaryDirectory() as tmp:
        target = untrained_target(Path(tmp))
        data = MembershipDataModule.from_split_file(target.split_path)
        dataset = data.dataset()
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch)
        names = (
            ["loss", "pia", "secmi_stat", "gradient_norm"]
            if args.quick
            else list(yaml.safe_load(Path("configs/attack/all.yaml").read_text())["attacks"])
        )
        for section in (
            lambda: attack_rows(target, loader, names, repeats),
            lambda: growth_rows(target, dataset, args.batch, repeats),
            lambda: ddp_rows(target, dataset, args.batch),
        ):
            rows = section()
            print_rows(rows)
            table += rows
    print("\n" + "\n".join(format_row(r) for r in [HEADER, *table]))
    print(
        f"\n{'quick' if args.quick else 'full'} suite: {time.perf_counter() - start:.0f} s, "
        f"{torch.get_num_threads()} threads, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}"
    )


if __name__ == "__main__":
    main()
