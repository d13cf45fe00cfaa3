import json

import lightning.pytorch as pl
import pytest
import torch
from opacus.accountants import create_accountant
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lab.attack import make_attacks, score_target
from lab.data import MembershipDataModule
from lab.errors import LabError
from lab.fit import main
from lab.targets import PixelDDPM
from lab.targets.dp import DPSGD, PrivateTraining
from lab.targets.load import load_target
from tests.conftest import TINY_CONFIG, fit_tiny

DP_ARGS = ["--model.dp.enabled", "true", "--model.dp.noise_multiplier", "1.1", "--model.dp.timesteps_per_example", "2"]


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("dp"), *DP_ARGS)


def test_epsilon_is_what_the_opacus_accountant_gives(dp_run):
    run, cli = dp_run
    # 32 members, batch 16: Poisson sample rate 1/2, 2 steps an epoch, 2 epochs; delta = 1 / (10 * 32)
    q, steps, delta = 0.5, 4, 1 / 320
    reference = create_accountant("prv")
    reference.history = [(1.1, q, steps)]
    expected = reference.get_epsilon(delta)

    meta = json.loads((run / "epoch_0002" / "target.json").read_text())
    privacy = meta["privacy"]
    assert privacy["sample_rate"] == q and privacy["steps"] == steps and privacy["delta"] == delta
    assert privacy["noise_multiplier"] == 1.1 and privacy["max_grad_norm"] == 1.0
    assert privacy["epsilon"] == pytest.approx(expected, rel=1e-9)

    ckpt = torch.load(run / "lightning" / "last.ckpt", weights_only=True)
    assert ckpt["privacy"]["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert any(k.startswith("unet.conv_in") for k in ckpt["state_dict"])  # plain keys, no Opacus wrapper

    (log_dir,) = (run / "tensorboard").iterdir()
    eps = [e.value for e in EventAccumulator(str(log_dir)).Reload().Scalars("privacy/epsilon")]
    first = create_accountant("prv")
    first.history = [(1.1, q, 2)]
    assert eps == pytest.approx([first.get_epsilon(delta), expected], rel=1e-6)  # it grows per epoch


def test_a_dp_target_is_attacked_like_any_other(dp_run):
    run, _ = dp_run
    target = load_target(run / "epoch_0002")
    table = score_target(target, make_attacks({"pia": {}}), batch_size=16)
    assert len(table) == len(target.split.ids) and table.score.notna().all()


class CheckPerExampleGradients(pl.Callback):
    """Before Opacus clips: one gradient row per example, averaging to the batch gradient."""

    def __init__(self):
        self.checked = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        rows = pl_module._batch_rows
        for p in pl_module.unet.parameters():
            assert p.grad_sample.shape == (rows, *p.shape)
            if rows:
                torch.testing.assert_close(p.grad_sample.mean(0), p.grad, rtol=1e-4, atol=1e-6)
        self.checked += 1


def test_timestep_multiplicity_averages_inside_each_examples_gradient(tmp_path):
    dm = MembershipDataModule(members=8, nonmembers=4, image_size=8, batch_size=4)
    dp = DPSGD(enabled=True, noise_multiplier=1.0, timesteps_per_example=3)
    model = PixelDDPM(image_size=8, channels=1, block_out_channels=(8, 8), norm_num_groups=4, dp=dp)
    check = CheckPerExampleGradients()
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[check],
    )
    trainer.fit(model, dm)
    assert check.checked == 4 and model.private.report()["steps"] == 4


def test_an_empty_poisson_batch_is_a_pure_noise_step():
    unet = torch.nn.Linear(3, 2)
    private = PrivateTraining(DPSGD(enabled=True, noise_multiplier=1.0))
    private._grad_params = list(unet.parameters())
    private.reduce_multiplicity(0)
    assert all(p.grad_sample.shape == (0, *p.shape) for p in unet.parameters())


@pytest.mark.parametrize(
    "override, message",
    [
        (["--trainer.accumulate_grad_batches", "2"], "cannot use trainer.accumulate_grad_batches"),
        (["--trainer.gradient_clip_val", "1.0"], "unset trainer.gradient_clip_val"),
        (["--model.dp.target_epsilon", "8"], "exactly one of dp.noise_multiplier and dp.target_epsilon"),
        (["--model.dp.delta", "0.5"], "must be below 1/members"),
        (["--model.dp.grad_sample_mode", "hooks"], "'hooks' gives wrong per-example gradients"),
    ],
)
def test_what_dp_sgd_cannot_do_is_a_clear_error(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(TINY_CONFIG), *DP_ARGS, *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_target_epsilon_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["--config", str(TINY_CONFIG), "--model.dp.enabled", "true", "--model.dp.target_epsilon", "0.001"])
    assert "dp.target_epsilon 0.001 is unreachable in 2 epochs" in capsys.readouterr().err


def test_modules_opacus_cannot_handle_are_named(tmp_path):
    class WithBatchNorm(PixelDDPM):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.unet.conv_in = torch.nn.Sequential(
                self.unet.conv_in, torch.nn.BatchNorm2d(self.unet.conv_in.out_channels)
            )

    dm = MembershipDataModule(members=8, nonmembers=4, image_size=8, batch_size=4)
    model = WithBatchNorm(
        image_size=8,
        channels=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        dp=DPSGD(enabled=True, noise_multiplier=1.0),
    )
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(LabError, match=r"Opacus cannot make these modules private: conv_in.1 \(BatchNorm2d\)"):
        trainer.fit(model, dm)


def test_more_than_one_optimizer_is_refused(tmp_path):
    class TwoOptimizers(PixelDDPM):  # manual optimization: Lightning itself allows several
        def __init__(self, **kw):
            super().__init__(**kw)
            self.automatic_optimization = False

        def configure_optimizers(self):
            return [super().configure_optimizers()["optimizer"], torch.optim.SGD(self.unet.parameters(), lr=0.1)]

    dm = MembershipDataModule(members=8, nonmembers=4, image_size=8, batch_size=4)
    model = TwoOptimizers(
        image_size=8,
        channels=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        dp=DPSGD(enabled=True, noise_multiplier=1.0),
    )
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(LabError, match="one optimizer"):
        trainer.fit(model, dm)


def test_a_resumed_dp_fit_keeps_counting_epsilon(dp_run, tmp_path, monkeypatch):
    import shutil

    run, _ = dp_run
    shutil.copytree(run, tmp_path / "checkpoints" / "ddpm_tiny")
    monkeypatch.chdir(tmp_path)
    main(
        [
            "--config",
            str(TINY_CONFIG),
            *DP_ARGS,
            "--trainer.max_epochs",
            "3",
            "--ckpt_path",
            "checkpoints/ddpm_tiny/lightning/last.ckpt",
        ]
    )
    privacy = json.loads((tmp_path / "checkpoints/ddpm_tiny/epoch_0003/target.json").read_text())["privacy"]
    reference = create_accountant("prv")
    reference.history = [(1.1, 0.5, 6)]
    assert privacy["steps"] == 6 and privacy["epsilon"] == pytest.approx(reference.get_epsilon(1 / 320), rel=1e-9)


def test_opacus_per_example_gradients_are_right_for_a_text_conditioned_unet(tmp_path):
    """DP-SGD on a text-to-image target clips each example's own gradient: Opacus' per-example
    gradients of a UNet2DConditionModel (cross-attention on the caption embedding) equal autograd run
    one example at a time, and a fit through lab.fit's TextToImage takes its private steps."""
    import copy

    import torch.nn.functional as F
    from helpers import random_conditional_unet
    from opacus import PrivacyEngine

    unet = random_conditional_unet(channels=4, perturb=False)
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    context, t = torch.randn(3, 5, 16, generator=g), torch.tensor([10, 500, 900])

    def loss(model, i):
        return F.mse_loss(model(x[i], t[i], encoder_hidden_states=context[i]).sample, noise[i])

    truth = []
    for i in range(3):
        ref = copy.deepcopy(unet)
        loss(ref, slice(i, i + 1)).backward()
        truth.append([p.grad.clone() for p in ref.parameters()])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=3)
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    PrivacyEngine().make_private(
        module=unet,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode="functorch",
        wrap_model=False,
    )
    loss(unet, slice(None)).backward()
    for j, p in enumerate(unet.parameters()):
        for i in range(3):
            torch.testing.assert_close(p.grad_sample[i], truth[i][j], rtol=1e-3, atol=1e-6)

    from lab.targets import TextToImage
    from lab.targets.autoencoder import AutoencoderStage

    dm = MembershipDataModule(members=8, nonmembers=4, image_size=8, batch_size=4, captions="text")
    model = TextToImage(
        image_size=8,
        channels=1,
        autoencoder=AutoencoderStage(block_out_channels=(8, 8), norm_num_groups=4, epochs=1, batch_size=8),
        block_out_channels=(8, 16),
        attention_head_dim=4,
        norm_num_groups=4,
        text_hidden_size=16,
        text_layers=1,
        dp=DPSGD(enabled=True, noise_multiplier=1.0, timesteps_per_example=2),
    )
    check = CheckPerExampleGradients()
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[check],
    )
    trainer.fit(model, dm)
    assert check.checked == 2 and model.private.report()["steps"] == 2
