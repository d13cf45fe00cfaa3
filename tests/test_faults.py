"""Nothing silent: an edited split, a mismatched checkpoint, two writers in one folder, SIGTERM,
and a run folder that owns everything its run writes."""

import json
import shutil
import signal

import pytest
import torch
import yaml
from conftest import TINY_CONFIG
from test_reliability import lab_command, resumable_config, wait_for

from lab.errors import LabError
from lab.locks import folder_lock
from lab.targets.load import load_target


def test_a_split_with_edited_roles_is_refused_by_the_target_it_was_trained_for(tiny_run, tmp_path, capsys):
    from lab.attack import main as attack_main

    run_dir, _ = tiny_run
    target = shutil.copytree(run_dir / "epoch_0001", tmp_path / "target")
    assert json.loads((target / "target.json").read_text())["split_fingerprint"] == load_target(target).split.fingerprint()
    for edit in ("roles", "splits"):
        d = json.loads((run_dir / "epoch_0001" / "split.json").read_text())
        for row in d["rows"]:
            if edit == "roles":
                row["role"] = "nonmember" if row["role"] == "member" else "member"  # content hash unchanged
            else:
                row["split"] = "test" if row["split"] == "validation" else "validation"
        (target / "split.json").write_text(json.dumps(d))
        with pytest.raises(SystemExit):
            attack_main(["--target", str(target), "--attacks", "[pia]", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert "lab.attack: error: the split" in err and "is not the one" in err and "fingerprint in target.json" in err
        assert not (tmp_path / "out" / "scores.csv").exists()


def test_an_external_pipeline_records_and_prints_the_ground_truth_it_was_given(tiny_run, tmp_path, capsys):
    from lab.attack import run

    run_dir, _ = tiny_run
    target = shutil.copytree(run_dir / "epoch_0001", tmp_path / "pretrained")
    (target / "target.json").unlink()  # as a downloaded pipeline: nothing binds a split to it
    scores, _, _ = run(str(target), ["pia"], split=str(run_dir / "split.json"), out=str(tmp_path / "out"), bootstrap=5)
    fingerprint = load_target(run_dir / "epoch_0001").split.fingerprint()
    assert set(scores.split_fingerprint) == {fingerprint}
    assert f"fingerprint {fingerprint[:16]}" in capsys.readouterr().out


def test_resuming_from_a_checkpoint_of_other_model_settings_is_refused(tiny_run, tmp_path, capsys, monkeypatch):
    from lab.fit import main as fit_main

    run_dir, _ = tiny_run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        fit_main(["--config", str(TINY_CONFIG), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                  "--ckpt_path", str(run_dir / "lightning" / "last.ckpt"), "--model.init_args.block_out_channels", "[16, 32]"])
    err = capsys.readouterr().err
    assert "was trained with other model settings" in err and "block_out_channels: checkpoint [8, 16], config [16, 32]" in err
    assert not (tmp_path / "run" / "epoch_0001").exists()


def test_a_second_writer_in_the_same_folder_stops_at_once(tiny_run, tmp_path, capsys, monkeypatch):
    from lab.attack import main as attack_main
    from lab.fit import main as fit_main

    run_dir, _ = tiny_run
    out = tmp_path / "out"
    with folder_lock(out, "lab.attack"):  # another lab.attack is writing there
        with pytest.raises(SystemExit):
            attack_main(["--target", str(run_dir / "epoch_0001"), "--attacks", "[pia]", "--out", str(out)])
        assert "another lab.attack is writing into" in capsys.readouterr().err
        assert not (out / "scores.csv").exists()
    monkeypatch.chdir(tmp_path)
    with folder_lock(tmp_path / "run", "lab.fit"):
        with pytest.raises(SystemExit):
            fit_main(["--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(tmp_path / "run")])
        assert "another lab.fit is writing into" in capsys.readouterr().err
        assert not list((tmp_path / "run").glob("epoch_*")) and not (tmp_path / "run" / "tensorboard").exists()
    with pytest.raises(LabError, match="another lab.study"):  # the lock is the process's: a nested take fails too
        with folder_lock(tmp_path / "s", "lab.study"), folder_lock(tmp_path / "s", "lab.study"):
            pass


def test_the_run_folder_owns_logs_and_checkpoints(tmp_path, monkeypatch):
    """--trainer.default_root_dir moves everything; no config path leaks elsewhere."""
    from lab.fit import main as fit_main

    monkeypatch.chdir(tmp_path)
    fit_main(["--config", str(TINY_CONFIG), "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "elsewhere"),
              "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "elsewhere"
    assert (run / "lightning" / "last.ckpt").is_file() and (run / "tensorboard").is_dir() and (run / "epoch_0001").is_dir()
    assert not (tmp_path / "checkpoints").exists()


def test_a_study_fit_keeps_a_last_checkpoint(tmp_path, monkeypatch):
    from lab.fit import main as fit_main

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"] if not c["class_path"].endswith("ModelCheckpoint")]
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    fit_main(["--config", str(tmp_path / "fit.yaml"), "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "arm"),
              "--trainer.enable_progress_bar", "false"])
    assert (tmp_path / "arm" / "lightning" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sigterm_stops_a_fit_with_an_error_that_says_how_to_resume(tmp_path):
    config, run = resumable_config(tmp_path, epochs=30), tmp_path / "run"
    proc = lab_command("lab.fit", "--config", str(config), cwd=tmp_path)
    wait_for(lambda: (run / "epoch_0005").is_dir() and (run / "lightning" / "last.ckpt").is_file(), 120, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    err = proc.stderr.read()
    assert "lab.fit: error: stopped by SIGTERM during epoch" in err and "--ckpt_path last" in err
    assert not (run / "epoch_0030").exists()


def test_a_resumed_fit_is_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    """Stopped after epoch 2 and resumed to 4 (as after a kill: last.ckpt is the epoch-2 state) == 4 in one go."""
    from safetensors.torch import load_file

    from lab.fit import main as fit_main

    monkeypatch.chdir(tmp_path)
    common = ["--config", str(TINY_CONFIG), "--trainer.enable_progress_bar", "false"]
    fit_main([*common, "--trainer.max_epochs", "4", "--trainer.default_root_dir", str(tmp_path / "straight")])
    fit_main([*common, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "resumed")])
    fit_main([*common, "--trainer.max_epochs", "4", "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", "last"])
    weights = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "straight" / "epoch_0004" / weights), load_file(tmp_path / "resumed" / "epoch_0004" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
