"""Lightning DDP on CPU (gloo, 2 processes): a tiny fit, and attacks gathered exactly once by id."""

import json

import pytest
from conftest import fit_tiny
from helpers import assert_same_scores
from test_latent import image_folder, save_pipeline

from lab.attack import run

DDP = {"strategy": "ddp_spawn", "devices": 2, "accelerator": "cpu"}


@pytest.mark.slow
def test_ddp_attack_scores_every_example_once_and_matches_one_process(tmp_path):
    target = save_pipeline("ddpm", tmp_path / "pretrained")
    members, nonmembers = image_folder(tmp_path / "members", 7, 0), image_folder(tmp_path / "nonmembers", 8, 1)
    folders = {"members": str(members), "nonmembers": str(nonmembers)}
    attacks = {"loss": {"num_noise": 2}, "pia": {}, "secmi_stat": {}}
    # 15 examples in batches of 4 over 2 processes: the shards are uneven and the sampler pads them
    one, _, _ = run(str(target), attacks, out=str(tmp_path / "one"), batch_size=4, bootstrap=5, **folders)
    two, _, _ = run(str(target), attacks, out=str(tmp_path / "two"), batch_size=4, bootstrap=5, trainer=DDP, **folders)
    assert len(two) == 3 * 15 and (two.groupby("attack").id.nunique() == 15).all()
    assert not two.duplicated(["attack", "id"]).any()
    merged = one.merge(two, on=["attack", "id"], suffixes=("_one", "_two"))
    assert len(merged) == 45 and (merged.role_one == merged.role_two).all()
    for attack, pair in merged.groupby("attack"):  # uneven shards are other batch shapes: equal up to rounding
        assert_same_scores(pair.score_two, pair.score_one, attack)
    assert (two.calls_per_example == one.calls_per_example).all()


@pytest.mark.slow
def test_ddp_fit_shares_the_members_between_processes(tmp_path):
    common = (
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.callbacks",
        "[{class_path: lab.callbacks.ScheduledExport, init_args: {epochs: [2]}}]",
    )
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, _ = fit_tiny(tmp_path / "one", *common)
    two, _ = fit_tiny(
        tmp_path / "two",
        *common,
        "--trainer.strategy",
        "ddp_spawn",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
    )
    assert (one / "split.json").read_text() == (two / "split.json").read_text()
    meta_one = json.loads((one / "epoch_0002" / "target.json").read_text())
    meta_two = json.loads((two / "epoch_0002" / "target.json").read_text())
    # 32 members, batch 16: 2 steps an epoch in one process, 1 in each of two (each rank sees its half)
    assert meta_one["global_step"] == 4 and meta_two["global_step"] == 2
