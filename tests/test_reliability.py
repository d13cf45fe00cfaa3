"""Faults and untrusted input: killed runs, crafted pickles, damaged files, bad data."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, TINY_CONFIG, write_image_folder
from PIL import Image

from lab.attack import make_attacks
from lab.data import MembershipDataModule, MembershipSplit
from lab.errors import LabError
from lab.targets.load import load_target


class Payload:
    """Unpickling this creates `marker`: the proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def lab_command(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    start = time.time()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before it could be killed: {proc.stderr.read()[-2000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.01)


def resumable_config(tmp_path: Path, epochs: int) -> Path:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["trainer"].update(
        max_epochs=epochs, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path / "run")
    )
    cfg["data"]["members"] = 256  # 16 steps an epoch: slow enough to be killed mid-run
    cfg["trainer"]["callbacks"] = [
        {"class_path": "lab.callbacks.ScheduledExport", "init_args": {"epochs": [5, 20, epochs]}},
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(tmp_path / "run" / "lightning"),
                "filename": "last",
                "save_top_k": 1,
                "enable_version_counter": False,
            },
        },
    ]
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit_until_epoch_5(tmp_path: Path) -> tuple[Path, Path, subprocess.Popen]:
    """A 30-epoch `lab.fit` in a subprocess, returned once epoch 5 is exported and last.ckpt exists."""
    config, run = resumable_config(tmp_path, epochs=30), tmp_path / "run"
    proc = lab_command("lab.fit", "--config", str(config), cwd=tmp_path)
    wait_for(lambda: (run / "epoch_0005").is_dir() and (run / "lightning" / "last.ckpt").is_file(), 120, proc)
    return config, run, proc


@pytest.mark.slow
def test_a_killed_fit_resumes_from_its_last_checkpoint(tmp_path):
    config, run, proc = fit_until_epoch_5(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(run / "lightning" / "last.ckpt", weights_only=True)["epoch"]
    assert not (run / "epoch_0030").exists() and killed_at < 29
    split_before = (run / "split.json").read_bytes()

    resumed = lab_command("lab.fit", "--config", str(config), "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert (run / "split.json").read_bytes() == split_before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("epoch_")) == [
        "epoch_0005",
        "epoch_0020",
        "epoch_0030",
    ]
    final = json.loads((run / "epoch_0030" / "target.json").read_text())
    assert final["epoch"] == 30 and final["global_step"] == 30 * 16  # 256 members, batch 16: no step lost or repeated
    assert torch.load(run / "lightning" / "last.ckpt", weights_only=True)["epoch"] == 29
    assert sorted(p.name for p in (run / "lightning").iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_a_killed_attack_leaves_no_partial_table_and_a_rerun_matches(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    target = str(run_dir / "epoch_0002")
    attacks = "{loss: {}, pia: {}, pfami: {}}"
    shards = tmp_path / "tmp"
    shards.mkdir()
    proc = lab_command(
        "lab.attack",
        "--target",
        target,
        "--attacks",
        attacks,
        "--out",
        str(tmp_path / "killed"),
        cwd=ROOT,
        env={"TMPDIR": str(shards)},
    )
    wait_for(lambda: any(shards.glob("lab_predict_*")), 120, proc)  # the first attack is scoring
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "scores.csv").exists() and not (tmp_path / "killed" / "metrics.csv").exists()
    from lab.attack import run

    first, _, _ = run(target, {"loss": {}, "pia": {}, "pfami": {}}, out=str(tmp_path / "killed"), bootstrap=5)
    again = pd.read_csv(tmp_path / "killed" / "scores.csv")
    other, _, _ = run(target, {"loss": {}, "pia": {}, "pfami": {}}, out=str(tmp_path / "clean"), bootstrap=5)
    assert np.array_equal(again.score.to_numpy(), other.score.to_numpy())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir() if p.suffix == ".csv") == [
        "metrics.csv",
        "scores.csv",
    ]


def test_a_crafted_pickle_is_refused_not_executed(tiny_run, tmp_path, capsys, monkeypatch):
    from lab.attack import main as attack_main
    from lab.fit import main as fit_main

    run_dir, _ = tiny_run
    marker = tmp_path / "pwned"
    # 1. a Lightning checkpoint to resume from
    torch.save({"state_dict": {}, "payload": Payload(marker)}, tmp_path / "evil.ckpt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        fit_main(
            ["--config", str(TINY_CONFIG), "--trainer.logger", "false", "--ckpt_path", str(tmp_path / "evil.ckpt")]
        )
    assert "refused to load" in capsys.readouterr().err
    # 2. a pipeline folder whose UNet weights are a pickle (.bin) instead of safetensors
    target = tmp_path / "target"
    shutil.copytree(run_dir / "epoch_0002", target)
    (target / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"payload": Payload(marker)}, target / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(SystemExit):
        attack_main(["--target", str(target), "--attacks", "[pia]", "--out", str(tmp_path / "out")])
    assert "cannot load the diffusers pipeline" in capsys.readouterr().err
    # 3. a black-box sample cache that is a pickle
    shutil.rmtree(target)
    shutil.copytree(run_dir / "epoch_0002", target)
    cache = make_attacks({"blackbox": {"num_samples": 4, "steps": 2}})["blackbox"].cache_path(load_target(target))
    cache.parent.mkdir(exist_ok=True)
    torch.save({"samples": Payload(marker)}, cache)
    with pytest.raises(LabError, match="not a valid safetensors file"):
        make_attacks({"blackbox": {"num_samples": 4, "steps": 2}})["blackbox"].bind(load_target(target))
    assert not marker.exists()


def test_damaged_or_foreign_checkpoints_are_clear_errors(tiny_run, tmp_path, capsys, monkeypatch):
    from lab.fit import main as fit_main

    run_dir, _ = tiny_run
    good = run_dir / "lightning" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = torch.load(good, weights_only=True)
    del foreign["hyper_parameters"]  # as another project's checkpoint: Lightning cannot take the model config from it
    torch.save(foreign, tmp_path / "foreign.ckpt")
    monkeypatch.chdir(tmp_path)
    cases = [
        (["--ckpt_path", str(truncated)], "is not a readable checkpoint (truncated or corrupt?)"),
        (
            ["--ckpt_path", str(tmp_path / "foreign.ckpt"), "--model.block_out_channels", "[8, 32]"],
            "was saved from another architecture",
        ),
        (["--ckpt_path", str(tmp_path / "nope.ckpt")], "checkpoint not found"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            fit_main(["--config", str(TINY_CONFIG), "--trainer.logger", "false", *args])
        assert message in capsys.readouterr().err


def test_bad_data_is_a_clear_error(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n=6)
    (folder / "notes.txt").write_text("not an image: ignored")
    assert (
        len(MembershipDataModule(source="folder", root=str(folder), members=3, nonmembers=3, image_size=8).split.ids)
        == 6
    )
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    Image.fromarray(nan).save(folder / "nan.tiff")
    with pytest.raises(LabError, match="nan.tiff: it holds NaN or infinite pixel values"):
        MembershipDataModule(source="folder", root=str(folder), members=3, nonmembers=3, image_size=8)
    (folder / "nan.tiff").unlink()
    (folder / "fake.png").write_text("a text file with an image suffix")
    with pytest.raises(LabError, match="cannot read image .*fake.png"):
        MembershipDataModule(source="folder", root=str(folder), members=3, nonmembers=3, image_size=8)
    with pytest.raises(LabError, match="names no examples"):
        MembershipSplit(ids=[], roles=[], eval_splits=[], seed=0)
