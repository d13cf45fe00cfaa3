"""Shared fixtures: tiny images on disk and a tiny fitted target (built once per session)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """`LAB_TEST_MKLDNN=0`: torch's oneDNN kernels off, so convolutions take another kernel path (with
    `ATEN_CPU_CAPABILITY=default` too, the suite then runs as on a CPU without AVX: see `.ci/run`)."""
    if os.environ.get("LAB_TEST_MKLDNN") == "0":
        import torch

        torch.backends.mkldnn.enabled = False


def pytest_collection_modifyitems(config, items):
    """Every test on the over-fitted target (about 40 s to build) is slow, marked or not."""
    for item in items:
        if "overfit_target" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


TINY_CONFIG = ROOT / "configs" / "ddpm_tiny.yaml"
LDM_TINY_CONFIG = ROOT / "configs" / "ldm_tiny.yaml"


def write_image_folder(path: Path, n: int = 6, seed: int = 0) -> Path:
    """Grayscale and RGB PNGs of two sizes, one in a sub-folder."""
    rng = np.random.default_rng(seed)
    (path / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i % 2:
            arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        else:
            arr = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(arr).save(path / ("sub" if i == 0 else ".") / f"img{i}.png")
    return path


def write_cifar_archive(path: Path, per_batch: int = 3, seed: int = 0) -> Path:
    """A tiny archive in the cifar-10-batches-py layout (pickled dicts of 3072-byte rows)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": [0] * per_batch}
        with open(path / name, "wb") as f:
            pickle.dump(batch, f)
    return path


def fit_tiny(work: Path, *overrides: str, config: Path = TINY_CONFIG):
    """`python -m lab.fit --config configs/<config> [overrides]` run in-process in `work`.

    The tiny configs write into `checkpoints/<config name>`, which is returned with the CLI."""
    import os

    from lab.fit import main

    old = os.getcwd()
    os.chdir(work)
    try:
        cli = main(["--config", str(config), *overrides])
    finally:
        os.chdir(old)
    return work / "checkpoints" / config.stem, cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("fit"))


@pytest.fixture(scope="session")
def overfit_target(tmp_path_factory):
    """A tiny UNet over-fitted to 16 MNIST members (1200 steps, 16x16; about 40 s on 2 cores), with
    48 non-members: members should stand out to every attack that works at all."""
    import lightning.pytorch as pl

    from lab.callbacks import ScheduledExport
    from lab.data import MembershipDataModule
    from lab.targets import PixelDDPM

    root = tmp_path_factory.mktemp("overfit")
    pl.seed_everything(0)
    data = MembershipDataModule(members=16, nonmembers=48, image_size=16, batch_size=16, seed=0)
    model = PixelDDPM(image_size=16, channels=1, block_out_channels=(16, 32), norm_num_groups=8, lr=2e-3)
    trainer = pl.Trainer(
        max_epochs=1200,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ScheduledExport([1200])],
    )
    trainer.fit(model, data)
    return root / "epoch_1200"
