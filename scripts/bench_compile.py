"""`lab.attack --compile`: the attacks' speed with the denoiser through `torch.compile`, and how far
the scores move. One run, interleaved: for each attack, eager, then compiled (the first compiled run
pays for the compilation and is reported apart), then eager and compiled again; speed-up = eager
time / compiled time of the repeats. Score difference: the largest |compiled - eager| relative to
the eager scores' spread, and the Spearman rank correlation.

    .venv/bin/python scripts/bench_compile.py [--target FOLDER] [--attacks loss pia secmi_stat] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--target", default=None, help="an export (default: fit configs/ddpm_tiny.yaml at 32x32 for 1 epoch)"
    )
    ap.add_argument("--attacks", nargs="+", default=["loss", "pia", "secmi_stat", "pfami"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from lab import fit
    from lab.attacks import make_attacks
    from lab.scoring import score_target
    from lab.targets.load import load_target, target_folders

    torch.set_num_threads(args.threads)
    if args.target is None:
        root = Path(tempfile.mkdtemp(prefix="lab_bench_compile_"))
        fit.main(
            [
                "--config",
                "configs/ddpm_tiny.yaml",
                "--trainer.default_root_dir",
                str(root),
                "--trainer.max_epochs",
                "1",
                "--data.image_size",
                "32",
                "--data.members",
                "128",
                "--data.nonmembers",
                "128",
                "--model.init_args.block_out_channels",
                "[32, 64, 64]",
                "--model.init_args.norm_num_groups",
                "8",
            ]
        )
        args.target = str(target_folders(root)[-1])
    target = load_target(args.target)

    def run(name: str, compiled: bool):
        start = time.perf_counter()
        table = score_target(
            target,
            make_attacks([name]),
            batch_size=args.batch_size,
            trainer_kwargs={"accelerator": "cpu"},
            compile=compiled,
        )
        return time.perf_counter() - start, table.sort_values("id").score.to_numpy()

    print(
        f"\n{len(target.split.ids)} examples, torch {torch.__version__}, {args.threads} threads, target {args.target}"
    )
    print(
        "| attack | eager s | compiled s | speed-up (range) | first compiled run s "
        "| max |diff| / score sd | Spearman |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.attacks:
        _, eager = run(name, False)
        first, compiled = run(name, True)
        ratios, t_eager, t_comp = [], [], []
        for _ in range(args.repeats):
            a, _ = run(name, False)
            b, compiled = run(name, True)
            t_eager.append(a), t_comp.append(b), ratios.append(a / b)
        diff = np.abs(compiled - eager).max() / max(eager.std(), 1e-12)
        rho = spearmanr(eager, compiled).statistic
        print(
            f"| {name} | {statistics.median(t_eager):.2f} | {statistics.median(t_comp):.2f} "
            f"| {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {first:.1f} | {diff:.1e} | {rho:.5f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
