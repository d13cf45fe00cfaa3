"""What each family adapter refuses, in one line, before anything runs (issue "Every diffusers denoiser,
part 1", and the review of the adapters against diffusers' own pipelines): denoisers whose call needs
inputs the family does not feed, outputs it would misread, schedules its conversions do not describe."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, EulerDiscreteScheduler, UNet2DModel

from lab.attacks import ATTACKS
from lab.errors import LabError
from lab.targets.load import target_from_pipeline


def unet(**config):
    torch.manual_seed(0)
    base = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )
    return UNet2DModel(**{**base, **config})


@pytest.mark.parametrize(
    "parts, message",
    [
        (dict(unet=unet(num_class_embeds=10)), "the denoiser is class-conditional"),
        (dict(unet=unet(out_channels=2)), "the UNet outputs 2 channels for 1 input channels (a learned-variance"),
        (
            dict(scheduler=EulerDiscreteScheduler(timestep_type="continuous", prediction_type="v_prediction")),
            "the scheduler feeds the denoiser 'continuous' timesteps",
        ),
        (dict(scheduler=DDPMScheduler(prediction_type="flow_prediction")), "the denoiser predicts 'flow_prediction'"),
    ],
)
def test_a_denoiser_or_schedule_the_family_cannot_call_is_refused(parts, message):
    pipe = DDPMPipeline(**{"unet": unet(), "scheduler": DDPMScheduler(), **parts})
    with pytest.raises(LabError, match=None) as e:
        target_from_pipeline(pipe)
    assert message in str(e.value)


def test_a_stable_diffusion_unet_with_sdxl_conditioning_is_refused():
    from diffusers import UNet2DConditionModel
    from helpers import random_conditional_unet

    from lab.targets.families import family

    cond = random_conditional_unet()
    family("stable_diffusion").check_denoiser(cond, UNet2DConditionModel, "sd", "StableDiffusionPipeline")
    cond.register_to_config(addition_embed_type="text_time")
    with pytest.raises(LabError, match="addition_embed_type is 'text_time' but a StableDiffusionPipeline feeds None"):
        family("stable_diffusion").check_denoiser(cond, UNet2DConditionModel, "sd", "StableDiffusionPipeline")


def test_timesteps_where_a_zero_terminal_snr_schedule_has_no_signal_are_refused():
    pipe = DDPMPipeline(unet=unet(), scheduler=DDIMScheduler(rescale_betas_zero_snr=True))
    target = target_from_pipeline(pipe)
    assert float(target.scheduler.alphas_cumprod[-1]) == 0
    ATTACKS["loss"](timesteps=[500]).bind(target)  # fine where abar_t > 0
    with pytest.raises(LabError, match=r"loss: timesteps \[999\] have abar_t = 0 \(a zero-terminal-SNR schedule\)"):
        ATTACKS["loss"](timesteps=[999]).bind(target)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_noise_schedule_stays_float32_under_a_true_16_bit_trainer(dtype):
    """Lightning's "16-true" / "bf16-true" convert a module's parameters and buffers; abar_t near 1 would
    round to 1 (0.9999 in fp16, 0.9983 in bf16) and x_t would get no noise at small t."""
    target = target_from_pipeline(DDPMPipeline(unet=unet(), scheduler=DDPMScheduler()))
    attack = ATTACKS["loss"](timesteps=[1]).bind(target).to(dtype)
    assert attack.alphas_cumprod.dtype == torch.float32
    assert float(1 - attack.abar(1)) > 0
    torch.testing.assert_close(attack.alphas_cumprod, target.scheduler.alphas_cumprod.float())


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_an_sdxl_pipeline_is_attacked_in_true_16_bit_precision_and_given_back_as_it_was(precision, tmp_path):
    """Weights in 16 bits (what fits SDXL at 1024x1024 on one GPU): finite scores ranked as in float32,
    the force_upcast VAE run in float32, and the caller's pipeline handed back in its own dtype."""
    from diffusers import StableDiffusionXLPipeline
    from helpers.hub_folders import build_hub_folder
    from scipy.stats import spearmanr

    import lab

    folder = build_hub_folder("stabilityai/stable-diffusion-xl-base-1.0", tmp_path)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True).to(torch.float32)
    g = torch.Generator().manual_seed(0)
    members, held = (torch.rand(4, 3, 128, 128, generator=g) * 2 - 1 for _ in range(2))
    captions = dict(member_captions=["a face"] * 4, nonmember_captions=["a cat"] * 4)
    scores = {}
    for p in ("32-true", precision):
        _, table = lab.evaluate(
            pipe,
            members,
            held,
            attacks={"loss": {"timesteps": [1, 100], "num_noise": 1}},
            bootstrap=5,
            trainer={"accelerator": "cpu", "precision": p},
            **captions,
        )
        scores[p] = table.sort_values("id").score.to_numpy()
        parts = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
        assert {t.dtype for m in parts for t in m.parameters()} == {torch.float32}
        assert not any(t.is_inference() for m in parts for t in m.parameters())
    assert torch.isfinite(torch.tensor(scores[precision])).all()
    assert spearmanr(scores["32-true"], scores[precision]).statistic > 0.9
