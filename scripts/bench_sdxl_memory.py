"""Attacking an SDXL-base-sized target: peak memory and speed, on one GPU or on the CPU.

Builds, in memory, a randomly initialised `StableDiffusionXLPipeline` with SDXL base 1.0's real shapes
(the config texts of tests/helpers/hub_folders.py, read from the Hub repository's mirror: UNet
320/640/1280 with 10-layer transformers, cross-attention 2048, text_time embedding 2816; CLIP ViT-L and
OpenCLIP bigG text encoders; AutoencoderKL 128/256/512/512 with force_upcast), and attacks it through
`lab.evaluate` (the `lab.attack` code path: the sdxl adapter's conditioning, VAE encoding per batch,
prompt embeddings once per batch) with random member / held-out images and captions. Prints the
parameter counts, seconds and the peak memory: the CUDA allocator's peak on a GPU, the process's
resident-set peak (sampled during the attack) on the CPU. Nothing is downloaded or written to disk.

    python scripts/bench_sdxl_memory.py --accelerator gpu --resolution 1024 --batch_size 4 --precision 16-mixed
    .venv/bin/python scripts/bench_sdxl_memory.py --accelerator cpu --resolution 256 --batch_size 2 --examples 4
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


class PeakRSS(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss_gib(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_gib())
            time.sleep(0.05)


def build(max_length: int = 77):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.hub_folders import SDXL_SCHEDULER, SDXL_TEXT_ENCODER, SDXL_TEXT_ENCODER_2, SDXL_UNET, SDXL_VAE

    from lab.targets.text import build_tokenizer

    def plain(cfg):
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    torch.manual_seed(0)
    tokenizer = build_tokenizer([f"a photo of item {i}" for i in range(10)], vocab_size=1000, max_length=max_length)
    texts = []
    for cls, cfg in ((CLIPTextModel, SDXL_TEXT_ENCODER), (CLIPTextModelWithProjection, SDXL_TEXT_ENCODER_2)):
        config = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype", "transformers_version")}
        config = {**config, "vocab_size": 1000, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        texts.append(cls(CLIPTextConfig(**config)))
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**plain(SDXL_VAE)),
        text_encoder=texts[0],
        text_encoder_2=texts[1],
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=UNet2DConditionModel(**plain(SDXL_UNET)),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        n = sum(p.numel() for p in getattr(pipe, name).parameters())
        print(f"{name}: {n / 1e6:.0f} M parameters", flush=True)
    return pipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accelerator", default="gpu")
    ap.add_argument("--resolution", type=int, default=1024, help="image side (SDXL's native: 1024)")
    ap.add_argument("--examples", type=int, default=8, help="members and held-out images, each")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--precision", nargs="+", default=["16-mixed"])
    args = ap.parse_args()

    import torch

    import lab

    start = time.perf_counter()
    pipe = build()
    print(f"built in {time.perf_counter() - start:.0f} s; process RSS {rss_gib():.1f} GiB", flush=True)
    g = torch.Generator().manual_seed(0)
    side, n = args.resolution, args.examples
    members, held = (torch.rand(n, 3, side, side, generator=g) * 2 - 1 for _ in range(2))
    captions = [f"a photo of item {i}" for i in range(n)]
    pipe.unet.register_to_config(sample_size=side // 8)  # the default image size is the images' (time ids)
    for precision in args.precision:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sampler = PeakRSS()
        sampler.start()
        start = time.perf_counter()
        metrics, scores = lab.evaluate(
            pipe,
            members,
            held,
            attacks={"loss": {"timesteps": [100], "num_noise": 1}},
            batch_size=args.batch_size,
            bootstrap=10,
            trainer={"accelerator": args.accelerator, "devices": 1, "precision": precision},
            member_captions=captions,
            nonmember_captions=captions[::-1],
        )
        seconds = time.perf_counter() - start
        sampler.running = False
        sampler.join()
        cuda = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        print(
            f"[{precision}] {side}x{side}, batch {args.batch_size}: {len(scores)} scores in {seconds:.0f} s "
            f"({len(scores) / seconds:.2f} examples/s); finite: {bool(scores.score.notna().all())}; "
            f"peak CUDA memory {cuda:.2f} GiB; peak process RSS {sampler.peak:.1f} GiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
