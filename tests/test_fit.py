import json
import os
import subprocess
import sys

import pytest
import torch
from diffusers import DDPMPipeline
from safetensors.torch import load_file

from lab.data import MembershipDataModule, MembershipSplit
from lab.errors import LabError
from lab.fit import main
from lab.targets import PixelDDPM
from tests.conftest import ROOT, TINY_CONFIG


def test_fit_exports_scheduled_epochs_loadable_by_diffusers(tiny_run):
    run, _ = tiny_run
    split = MembershipSplit.load(run / "split.json")
    for epoch in (1, 2):
        folder = run / f"epoch_{epoch:04d}"
        assert MembershipSplit.load(folder / "split.json") == split
        meta = json.loads((folder / "target.json").read_text())
        assert meta["epoch"] == epoch and meta["global_step"] == 2 * epoch  # 32 members / batch 16
        pipe = DDPMPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
        assert out.images.shape == (2, 16, 16, 1)
    assert not list(run.glob("*.tmp"))
    assert (run / "lightning" / "last.ckpt").is_file()


def test_fit_logs_loss_lr_and_samples_to_tensorboard(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tiny_run
    (log_dir,) = (run / "tensorboard").iterdir()
    events = EventAccumulator(str(log_dir)).Reload()
    tags = events.Tags()
    assert {"train/loss_step", "train/loss_epoch", "lr"} <= set(tags["scalars"])
    assert "samples" in tags["images"]
    assert (log_dir / "hparams.yaml").is_file() and (log_dir / "config.yaml").is_file()


def test_fit_trains_only_on_members(tiny_run):
    _, cli = tiny_run
    dm = cli.datamodule
    rows = dm.train_dataloader().dataset.rows
    assert len(rows) == 32 and all(dm.split.roles[r] == "member" for r in rows)


def test_ema_is_what_gets_exported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(["--config", str(TINY_CONFIG), "--trainer.max_epochs", "1", "--model.init_args.ema_decay", "0.9"])
    exported = load_file(tmp_path / "checkpoints/ddpm_tiny/epoch_0001/unet/diffusion_pytorch_model.safetensors")
    ema = cli.model.ema.module.state_dict()
    raw = cli.model.unet.state_dict()
    name = "conv_in.weight"
    assert torch.equal(exported[name], ema[name]) and not torch.equal(exported[name], raw[name])


def test_print_config_and_module_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "lab.fit", "--config", str(TINY_CONFIG), "--print_config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "class_path: lab.targets.PixelDDPM" in out and "members: 32" in out
    assert not (tmp_path / "checkpoints").exists()


def test_a_fit_outside_a_terminal_prints_progress_lines_and_no_library_chatter(tmp_path):
    """Two batches per epoch and a logging interval of 50 steps: Lightning's hint about it, its
    banners and tips are not printed; the fit's progress lines are."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.fit",
            "--config",
            str(TINY_CONFIG),
            "--trainer.max_epochs",
            "1",
            "--trainer.log_every_n_steps",
            "50",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    chatter = ("logging interval", "GPU available", "TPU available", "Tip:", "LeafSpec", "Warning")
    assert not [line for line in (run.stdout + run.stderr).splitlines() if any(c in line for c in chatter)]
    assert "[run] epoch 1/1: loss " in run.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data.source", "imagenet"], "lab.fit: error: unknown data source 'imagenet'"),
        (["--data.members", "4990"], "lab.fit: error: asked for 4990 members"),
        (["--data.source", "folder", "--data.root", "nowhere"], "lab.fit: error: image folder not found: nowhere"),
        (["--data.membrs", "3"], "error: unrecognized arguments: --data.membrs 3"),
        (["--model.init_args.block_out_channels", "[8,10]"], "lab.fit: error: norm_num_groups 4 must divide"),
        (["--data.image_size", "17"], "lab.fit: error: image_size 17 must be divisible by 2^1"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(TINY_CONFIG), *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_a_run_folder_refuses_a_different_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["--config", str(TINY_CONFIG), "--trainer.max_epochs", "1"])
    with pytest.raises(SystemExit):
        main(["--config", str(TINY_CONFIG), "--trainer.max_epochs", "1", "--data.seed", "7"])
    assert "holds a different membership split" in capsys.readouterr().err


def test_target_refuses_data_of_another_shape(tmp_path):
    import lightning.pytorch as pl

    dm = MembershipDataModule(members=4, nonmembers=4, image_size=16)
    model = PixelDDPM(image_size=8, channels=1, block_out_channels=(8, 16), norm_num_groups=4)
    trainer = pl.Trainer(
        max_epochs=1, default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    with pytest.raises(LabError, match=r"shape \(1, 16, 16\) but the target takes \(1, 8, 8\)"):
        trainer.fit(model, dm)
