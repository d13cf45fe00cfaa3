"""Nothing silent: an edited split, a mismatched checkpoint, two writers in one folder, SIGTERM,
and a run folder that owns everything its run writes."""

import json
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_CONFIG
from test_reliability import fit_until_epoch_5, lab_command, wait_for

from lab.errors import LabError
from lab.locks import folder_lock
from lab.targets.load import load_target


def test_a_split_with_edited_roles_is_refused_by_the_target_it_was_trained_for(tiny_run, tmp_path, capsys):
    from lab.attack import main as attack_main

    run_dir, _ = tiny_run
    target = shutil.copytree(run_dir / "epoch_0001", tmp_path / "target")
    assert (
        json.loads((target / "target.json").read_text())["split_fingerprint"]
        == load_target(target).split.fingerprint()
    )
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
        assert (
            "lab.attack: error: the split" in err and "is not the one" in err and "fingerprint in target.json" in err
        )
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
        fit_main(
            [
                "--config",
                str(TINY_CONFIG),
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                "--ckpt_path",
                str(run_dir / "lightning" / "last.ckpt"),
                "--model.init_args.block_out_channels",
                "[16, 32]",
            ]
        )
    err = capsys.readouterr().err
    assert (
        "was trained with other model settings" in err
        and "block_out_channels: checkpoint [8, 16], config [16, 32]" in err
    )
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


def test_the_run_folder_owns_logs_and_checkpoints(tmp_path, monkeypatch, capsys):
    """--trainer.default_root_dir moves everything; no config path leaks elsewhere. Not on a
    terminal, progress is a line per few epochs, not a redrawn bar."""
    from lab.fit import main as fit_main

    monkeypatch.chdir(tmp_path)
    fit_main(
        [
            "--config",
            str(TINY_CONFIG),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "elsewhere"),
        ]
    )
    run = tmp_path / "elsewhere"
    out = capsys.readouterr()
    assert "[elsewhere] epoch 1/1: loss " in out.out and "ETA" in out.out and "\r" not in out.out + out.err
    assert (
        (run / "lightning" / "last.ckpt").is_file()
        and (run / "tensorboard").is_dir()
        and (run / "epoch_0001").is_dir()
    )
    assert not (tmp_path / "checkpoints").exists()


def test_a_study_fit_keeps_a_last_checkpoint(tmp_path, monkeypatch):
    from lab.fit import main as fit_main

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["trainer"]["callbacks"] = [
        c for c in cfg["trainer"]["callbacks"] if not c["class_path"].endswith("ModelCheckpoint")
    ]
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    fit_main(
        [
            "--config",
            str(tmp_path / "fit.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "arm"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert (tmp_path / "arm" / "lightning" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sigterm_stops_a_fit_with_an_error_that_says_how_to_resume(tmp_path):
    _, run, proc = fit_until_epoch_5(tmp_path)
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
    fit_main(
        [
            *common,
            "--trainer.max_epochs",
            "4",
            "--trainer.default_root_dir",
            str(tmp_path / "resumed"),
            "--ckpt_path",
            "last",
        ]
    )
    weights = "unet/diffusion_pytorch_model.safetensors"
    a, b = (
        load_file(tmp_path / "straight" / "epoch_0004" / weights),
        load_file(tmp_path / "resumed" / "epoch_0004" / weights),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


FIT_BAD = [
    (["--trainer.max_epochs", "-3"], "trainer.max_epochs must be >= 0"),
    (["--data.batch_size", "0"], "data.batch_size must be >= 1, got 0"),
    (["--data.batch_size", "-2"], "data.batch_size must be >= 1, got -2"),
    (["--model.init_args.lr", "-1"], "model.lr must be > 0"),
    (["--data.image_size", "0"], "image_size must be >= 1"),
    (["--data.members", "abc"], 'Parser key "data.members"'),
    (["--data.memberz", "3"], "did you mean --data.members"),
    (["--trainer.max_epohcs", "3"], "did you mean --trainer.max_epochs"),
]


@pytest.mark.parametrize("args,message", FIT_BAD)
def test_bad_fit_options_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    from lab.fit import main as fit_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        fit_main(["--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(tmp_path / "run"), *args])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab.fit: error: ") and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_an_export_epoch_of_zero_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from lab.fit import main as fit_main

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["epochs"] = [0, 2]
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        fit_main(["--config", str(tmp_path / "fit.yaml"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert "ScheduledExport epochs (1-based) must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _edit_json(path, change):
    d = json.loads(path.read_text())
    path.write_text(json.dumps(change(d)))


ATTACK_BAD = [
    (lambda t: [], ["--attacks", "{pia: {timestep: abc}}"], "attack 'pia': invalid literal for int()"),
    (lambda t: [], ["--attacks", "{pia: {tstep: 3}}"], "attack 'pia': got an unexpected keyword argument 'tstep'"),
    (lambda t: [], ["--trainer", "{acelerator: cpu}"], "Trainer takes no 'acelerator' (did you mean accelerator"),
    (lambda t: [], ["--batch_size", "0"], "--batch_size must be >= 1"),
    (lambda t: (t / "target.json").write_text("{not json"), [], "target.json is not valid JSON"),
    (lambda t: (t / "target.json").write_text("[1, 2]"), [], "target.json is not a JSON object"),
    (
        lambda t: _edit_json(t / "target.json", lambda d: {**d, "epoch": "x"}),
        [],
        "epoch must be a non-negative integer",
    ),
    (
        lambda t: _edit_json(t / "split.json", lambda d: {k: v for k, v in d.items() if k != "preprocess"}),
        [],
        "not a valid membership split",
    ),
    (
        lambda t: _edit_json(t / "split.json", lambda d: {k: v for k, v in d.items() if k != "sources"}),
        [],
        "not a valid membership split",
    ),
    (
        lambda t: _edit_json(t / "split.json", lambda d: {**d, "preprocess": {"image_size": 16}}),
        [],
        "preprocess needs image_size",
    ),
    (
        lambda t: _edit_json(t / "split.json", lambda d: {**d, "sources": {"member": {"name": "mnist"}}}),
        [],
        "sources need a 'nonmember' entry",
    ),
    (lambda t: _edit_json(t / "split.json", lambda d: {**d, "rows": "all"}), [], "'rows' must be a list"),
    (
        lambda t: (t.parent / "outfile").write_text("a file, not a folder"),
        ["--out", "{parent}/outfile"],
        "cannot write into",
    ),
]


@pytest.mark.parametrize("case", range(len(ATTACK_BAD)))
def test_bad_attack_input_is_one_line_before_any_scoring(tiny_run, tmp_path, capsys, case):
    from lab.attack import main as attack_main

    breaks, args, message = ATTACK_BAD[case]
    run_dir, _ = tiny_run
    target = shutil.copytree(run_dir / "epoch_0001", tmp_path / "target")
    breaks(target)
    args = [a.replace("{parent}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        attack_main(
            ["--target", str(target), "--attacks", "[pia]", *args]
            if "--attacks" not in args
            else ["--target", str(target), *args]
        )
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab.attack: error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()  # nothing written: not even the output folder


def test_a_folder_source_refuses_the_filesystem_root_and_decompression_bombs(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from lab.data import load_source, sources

    with pytest.raises(LabError, match="is the filesystem root"):
        load_source("folder", "/")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(sources, "MAX_PIXELS", 100)  # a 20 x 20 image now stands for a bomb: refused from its header
    with pytest.raises(LabError, match="big.png: it is 20 x 20 pixels, more than the 100"):
        load_source("folder", str(tmp_path))


def test_an_attack_rerun_keeps_each_finished_target_attack_and_gives_the_same_tables(tiny_run, tmp_path, capsys):
    from lab.attack import PARTIAL_DIR, run

    run_dir, _ = tiny_run
    target = str(run_dir / "epoch_0002")
    run(target, {"loss": {}}, out=str(tmp_path / "resumed"), bootstrap=5)  # as if killed after the first attack
    assert (tmp_path / "resumed" / PARTIAL_DIR / "epoch_0002__loss.csv").is_file()
    capsys.readouterr()
    resumed, resumed_table, _ = run(target, {"loss": {}, "pia": {}}, out=str(tmp_path / "resumed"), bootstrap=5)
    assert "loss on epoch_0002: kept from an earlier run" in capsys.readouterr().out
    clean, clean_table, _ = run(target, {"loss": {}, "pia": {}}, out=str(tmp_path / "clean"), bootstrap=5)
    cols = ["attack", "id", "role", "split", "score", "settings", "split_fingerprint"]
    pd.testing.assert_frame_equal(resumed[cols], clean[cols])
    pd.testing.assert_frame_equal(
        resumed_table.drop(columns="seconds"), clean_table.drop(columns="seconds")
    )  # wall time differs
    # other settings are scored again, not taken from the kept rows
    changed, _, _ = run(target, {"loss": {"timesteps": [50]}}, out=str(tmp_path / "resumed"), bootstrap=5)
    assert "kept from an earlier run" not in capsys.readouterr().out
    assert not np.array_equal(changed.score.to_numpy(), clean[clean.attack == "loss"].score.to_numpy())


def test_sigterm_inside_a_study_or_an_attack_is_an_error_with_a_hint():
    import os

    from lab.errors import Interrupted, sigterm_is_an_error

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="stopped by SIGTERM; rerun"), sigterm_is_an_error("rerun"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) is before and Interrupted("x").exit_code == 143


@pytest.mark.slow
def test_sigterm_stops_an_attack_with_exit_143_and_a_rerun_keeps_finished_attacks(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "out"
    args = [
        "--target",
        str(run_dir / "epoch_0002"),
        "--attacks",
        "{loss: {}, secmi_stat: {t_sec: 999, interval: 1}}",
        "--out",
        str(out),
    ]
    proc = lab_command("lab.attack", *args, cwd=tmp_path)
    wait_for(
        lambda: (out / ".partial" / "epoch_0002__loss.csv").is_file(), 120, proc
    )  # loss done; secmi (999 calls an example) inside trainer.predict
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = proc.stderr.read()
    assert "lab.attack: error: stopped by SIGTERM; rerun the same command" in err
    assert not (out / "scores.csv").exists()
