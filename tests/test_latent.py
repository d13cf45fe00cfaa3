"""Latent-diffusion targets and pretrained diffusers folders (DDPMPipeline and LDMPipeline layouts)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import LDM_TINY_CONFIG, fit_tiny
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline, UNet2DModel, VQModel
from helpers import assert_keeps_its_cost, quick_settings
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_attacks import NEEDS_REFERENCES

from lab.attack import main, make_attacks, run, score_target
from lab.attacks import ATTACK_NAMES, ATTACKS
from lab.errors import LabError
from lab.targets.autoencoder import encode
from lab.targets.load import load_target


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("ldm"), config=LDM_TINY_CONFIG)


@pytest.fixture(scope="module")
def ldm_target(ldm_run):
    run_dir, _ = ldm_run
    return load_target(run_dir / "epoch_0002")


def test_two_stages_train_export_and_log(ldm_run):
    run_dir, _ = ldm_run
    record = json.loads((run_dir / "autoencoder" / "autoencoder.json").read_text())
    assert record["epochs"] == 2 and np.isfinite([record["recon_mse_members"], record["recon_mse_nonmembers"]]).all()
    meta = json.loads((run_dir / "epoch_0002" / "target.json").read_text())
    assert meta["epoch"] == 2 and meta["autoencoder"] == record
    logs = run_dir / "tensorboard" / "version_0"
    stage1 = EventAccumulator(str(logs / "autoencoder")).Reload()
    assert {"autoencoder/recon_mse_members", "autoencoder/recon_mse_nonmembers"} <= set(stage1.Tags()["scalars"])
    assert "autoencoder/originals_over_reconstructions" in stage1.Tags()["images"]
    stage2 = EventAccumulator(str(logs)).Reload()
    assert "samples" in stage2.Tags()["images"] and "train/loss_epoch" in stage2.Tags()["scalars"]


def test_export_is_a_plain_ldm_pipeline_that_samples(ldm_run):
    run_dir, _ = ldm_run
    pipe = LDMPipeline.from_pretrained(run_dir / "epoch_0002")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
    assert pipe.unet.config.in_channels == 4 and pipe.unet.config.sample_size == 8  # 16x16 -> 4x8x8 latents
    assert pipe.scheduler.config.clip_sample is False  # latents are not clipped to [-1, 1]


def test_the_autoencoder_scale_makes_unit_variance_latents(ldm_target):
    from lab.data import MembershipDataModule

    data = MembershipDataModule.from_split_file(ldm_target.split_path)
    with torch.no_grad():
        z = encode(ldm_target.autoencoder, data.images[data.split.select("member")])
    assert z.shape[1:] == (4, 8, 8) and z.std().item() == pytest.approx(1.0, rel=1e-4)


def test_attacks_run_on_latents_of_the_posterior_mean(ldm_target):
    """The loss attack on a latent target is the eps-MSE of s * E(x0), the posterior mean, with its seeded noise."""
    table = score_target(ldm_target, make_attacks({"loss": {"timesteps": [100], "num_noise": 1}}), batch_size=8)
    attack = make_attacks({"loss": {"timesteps": [100], "num_noise": 1}})["loss"].bind(ldm_target)
    from lab.data import MembershipDataModule

    x0, row = MembershipDataModule.from_split_file(ldm_target.split_path).dataset()[3]
    with torch.no_grad():
        ae = ldm_target.autoencoder
        z0 = ae.encode(x0[None]).latent_dist.mean * ae.config.scaling_factor
        noise = attack.noise(z0, torch.tensor([row]))
        t = torch.tensor([100])
        abar = ldm_target.scheduler.alphas_cumprod[100]
        eps = ldm_target.unet(abar.sqrt() * z0 + (1 - abar).sqrt() * noise, t).sample
    expected = -(eps - noise).pow(2).mean().item()
    assert table.set_index("id").score[ldm_target.split.ids[row]] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "name", [n for n in ATTACK_NAMES if n not in NEEDS_REFERENCES and not ATTACKS[n].text_to_image_only]
)
def test_every_attack_gives_one_finite_score_per_example_on_a_latent_target(ldm_target, name):
    attack = make_attacks({name: quick_settings(name)})[name]
    table = score_target(ldm_target, {name: attack}, batch_size=16)
    assert_keeps_its_cost(table, attack, len(ldm_target.split.ids), name)


def test_rerun_reuses_the_autoencoder_and_dp_covers_the_unet(ldm_run, tmp_path):
    run_dir, _ = ldm_run
    before = (run_dir / "autoencoder" / "diffusion_pytorch_model.safetensors").read_bytes()
    work = run_dir.parent.parent
    root = tmp_path / "dp"
    shutil.copytree(run_dir / "autoencoder", root / "autoencoder")
    shutil.copy(run_dir / "split.json", root / "split.json")
    fit_tiny(
        work,
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks",
        "[{class_path: lab.callbacks.ScheduledExport, init_args: {epochs: [1]}}]",
        "--model.dp.enabled",
        "true",
        "--model.dp.noise_multiplier",
        "1.0",
        config=LDM_TINY_CONFIG,
    )
    assert (root / "autoencoder" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    meta = json.loads((root / "epoch_0001" / "target.json").read_text())
    assert meta["privacy"]["epsilon"] > 0 and "UNet only" in meta["privacy"]["scope"]
    assert meta["autoencoder"]["split_hash"] == json.loads((root / "split.json").read_text())["content_hash"]


def test_a_vq_autoencoder_trains_exports_and_is_attacked(tmp_path):
    root = tmp_path / "vq"
    fit_tiny(
        tmp_path,
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks",
        "[{class_path: lab.callbacks.ScheduledExport, init_args: {epochs: [1]}}]",
        "--model.autoencoder.kind",
        "vq",
        "--model.autoencoder.num_vq_embeddings",
        "32",
        "--model.autoencoder.epochs",
        "1",
        config=LDM_TINY_CONFIG,
    )
    target = load_target(root / "epoch_0001")
    assert isinstance(target.autoencoder, VQModel) and target.image_shape == (1, 16, 16)
    table = score_target(target, make_attacks(["pia"]))
    assert len(table) == len(target.split.ids) and np.isfinite(table.score).all()


# --- pretrained diffusers folders ------------------------------------------------------------


def tiny_unet(channels: int, size: int) -> UNet2DModel:
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        norm_num_groups=4,
    )


def tiny_vq(latent_channels: int = 3) -> VQModel:
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        norm_num_groups=4,
        num_vq_embeddings=16,
        sample_size=16,
    )


def save_pipeline(layout: str, path, unet_channels: int = 3):
    """A tiny random pipeline as a downloaded google/ddpm-cifar10-32 or CompVis/ldm-celebahq-256 folder would be."""
    torch.manual_seed(0)
    if layout == "ddpm":
        DDPMPipeline(unet=tiny_unet(3, 16), scheduler=DDPMScheduler()).save_pretrained(path)
    else:
        LDMPipeline(vqvae=tiny_vq(), unet=tiny_unet(unet_channels, 8), scheduler=DDIMScheduler()).save_pretrained(path)
    return path


def image_folder(path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


@pytest.mark.parametrize("layout", ["ddpm", "ldm"])
def test_a_pretrained_pipeline_with_member_and_nonmember_folders(layout, tmp_path, capsys):
    target = save_pipeline(layout, tmp_path / layout)
    members, nonmembers = image_folder(tmp_path / "members", 6, 0), image_folder(tmp_path / "nonmembers", 8, 1)
    main(
        [
            "--target",
            str(target),
            "--members",
            str(members),
            "--nonmembers",
            str(nonmembers),
            "--attacks",
            "[loss, pia]",
            "--bootstrap",
            "5",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert (
        len(scores) == 2 * 14
        and scores.groupby("attack").id.nunique().eq(14).all()
        and np.isfinite(scores.score).all()
    )
    roles = scores.drop_duplicates("id").set_index("id").role
    assert (roles[roles.index.str.startswith("folder:members/")] == "member").all()
    assert (roles[roles.index.str.startswith("folder:nonmembers/")] == "nonmember").all()
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["preprocess"] == {"image_size": 16, "channels": 3}
    assert "AUC" in capsys.readouterr().out


def test_pretrained_folder_errors(tmp_path, capsys):
    members, nonmembers = image_folder(tmp_path / "members", 4, 0), image_folder(tmp_path / "nonmembers", 4, 1)
    folders = ["--members", str(members), "--nonmembers", str(nonmembers)]
    mismatch = save_pipeline("ldm", tmp_path / "mismatch", unet_channels=4)  # the VQ model makes 3-channel latents
    (tmp_path / "empty").mkdir()
    ddpm = save_pipeline("ddpm", tmp_path / "ddpm")
    run(str(ddpm), ["pia"], members=str(members), nonmembers=str(nonmembers), out=str(tmp_path / "ok"), bootstrap=5)
    (members / "001.png").unlink()  # the split written above now names an image the folder lacks
    cases = [
        ([str(mismatch), *folders], "the UNet takes 4-channel inputs but the autoencoder makes 3-channel latents"),
        ([str(tmp_path / "empty"), *folders], "no diffusers pipeline folder"),
        (
            [str(ddpm), "--split", str(tmp_path / "ok" / "split.json")],
            "missing from the data, e.g. folder:members/001.png",
        ),
        ([str(ddpm), "--members", str(members)], "give both --members DIR and --nonmembers DIR"),
        ([str(ddpm), "--members", str(members), "--nonmembers", str(members)], "are the same folder"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            main(["--target", *args, "--attacks", "[pia]", "--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out" / "scores.csv").exists()


def test_the_same_image_in_both_folders_is_refused(tmp_path):
    from lab.data import split_from_folders

    members, nonmembers = image_folder(tmp_path / "members", 3, 0), image_folder(tmp_path / "nonmembers", 3, 1)
    (nonmembers / "dup.png").write_bytes((members / "002.png").read_bytes())
    with pytest.raises(LabError, match="the same image is in both folders: folder:members/002.png"):
        split_from_folders(str(members), str(nonmembers), image_size=16, channels=3)
