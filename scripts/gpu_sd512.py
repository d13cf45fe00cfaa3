"""Attacking a Stable-Diffusion-1.5-sized target at 512x512 on one GPU: peak memory and speed.

Builds a randomly initialised pipeline with SD 1.5's shapes (UNet2DConditionModel 320/640/1280/1280,
cross-attention 768; CLIP text encoder 768 x 12 layers; AutoencoderKL 128/256/512/512, 4 latent
channels; PNDM scaled-linear schedule), saves it as a StableDiffusionPipeline folder, writes member
and held-out folders of 512x512 images with metadata.jsonl captions, and runs `lab.attack` on them
with the caption and the empty prompt, in 16-mixed and 32-true, printing examples/s and the CUDA
allocator's peak. Nothing is downloaded; the weights are random (speed and memory do not depend on them).
`--small` builds a tiny version of the same thing (a CPU dry run).

    python scripts/gpu_sd512.py --out /tmp/sd512            # on a GPU machine
    .venv/bin/python scripts/gpu_sd512.py --small --accelerator cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def build(folder: Path, small: bool) -> None:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lab.targets.text import build_tokenizer

    torch.manual_seed(0)
    width = 32 if small else 768
    unet = UNet2DConditionModel(
        sample_size=8 if small else 64,
        block_out_channels=(32, 64) if small else (320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D")
        if small
        else ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if small else ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=1 if small else 2,
        cross_attention_dim=width,
        attention_head_dim=8,
        norm_num_groups=32 if not small else 8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32) if small else (128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * (2 if small else 4),
        up_block_types=("UpDecoderBlock2D",) * (2 if small else 4),
        latent_channels=4,
        layers_per_block=1 if small else 2,
        norm_num_groups=32,
        sample_size=64 if small else 512,
        in_channels=3,
        out_channels=3,
        scaling_factor=0.18215,
    )
    tokenizer = build_tokenizer([f"a photo of item {i}" for i in range(10)], vocab_size=1000, max_length=77)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=2 if small else 12,
            num_attention_heads=4 if small else 12,
            max_position_embeddings=77,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    print(
        f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.0f} M, "
        f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.0f} M, "
        f"text encoder {sum(p.numel() for p in text.parameters()) / 1e6:.0f} M parameters",
        flush=True,
    )


def images(folder: Path, n: int, size: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a photo of item {i} from set {seed}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/sd512")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--accelerator", default="gpu")
    ap.add_argument("--examples", type=int, default=32, help="members and held-out images, each")
    ap.add_argument("--batch_size", type=int, default=8)
    args = ap.parse_args()

    import torch

    from lab.attack import run

    out = Path(args.out)
    size = 64 if args.small else 512
    if not (out / "sd" / "model_index.json").is_file():
        build(out / "sd", args.small)
    images(out / "members", args.examples, size, 0)
    images(out / "heldout", args.examples, size, 1)
    attacks = {"loss": {"timesteps": [100], "num_noise": 4}, "pia": {}, "clid": {}}
    for precision in ("16-mixed", "32-true"):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        scores, table, _ = run(
            str(out / "sd"),
            attacks,
            out=str(out / f"attacks_{precision}"),
            batch_size=args.batch_size,
            bootstrap=10,
            trainer={"accelerator": args.accelerator, "devices": 1, "precision": precision},
            members=str(out / "members"),
            nonmembers=str(out / "heldout"),
            captions="text",
            conditions=["caption", "empty"],
        )
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        speeds = scores.groupby("attack").examples_per_s.first().round(1).to_dict()
        print(
            f"[{precision}] {size}x{size}, batch {args.batch_size}: {seconds:.0f} s for {len(scores)} scores; "
            f"peak CUDA memory {peak:.2f} GiB; examples/s {speeds}",
            flush=True,
        )


if __name__ == "__main__":
    main()
