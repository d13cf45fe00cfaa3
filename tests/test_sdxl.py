"""SDXL (issue "Every diffusers denoiser, part 1"): the lab's tiny SDXL-style target is trained, exported
as a `StableDiffusionXLPipeline` folder diffusers samples from offline, and attacked with every
conditional attack; the context its adapter forms (two encoders' penultimate states, the pooled
projection, the six time ids, zeros for the empty prompt) and its latents are the pipeline's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fit_tiny
from helpers import quick_settings

from lab.attack import main as attack_main
from lab.errors import LabError
from lab.targets.load import load_pipeline, load_target

XL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text2image_xl_tiny.yaml"


@pytest.fixture(scope="module")
def xl_run(tmp_path_factory):
    # 16 members and 16 non-members (the config's are 32 each): every conditional attack runs on it twice
    return fit_tiny(tmp_path_factory.mktemp("xl"), "--data.members", "16", "--data.nonmembers", "16", config=XL_CONFIG)


def test_fit_exports_an_sdxl_pipeline_that_diffusers_samples_from_offline(xl_run):
    from diffusers import StableDiffusionXLPipeline

    run, _ = xl_run
    folder = run / "epoch_0002"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.addition_embed_type == "text_time"
    images = pipe(["a handwritten digit seven"], num_inference_steps=2, height=16, width=16, output_type="np").images
    assert images.shape == (1, 16, 16, 1) and np.isfinite(images).all()
    target = load_target(folder)
    assert target.family.name == "sdxl" and target.conditional


@pytest.fixture(scope="module")
def sdxl_base(tmp_path_factory):
    """stabilityai/stable-diffusion-xl-base-1.0 as its folder is laid out (real configs, random shrunk weights)."""
    from helpers.hub_folders import build_hub_folder

    return build_hub_folder("stabilityai/stable-diffusion-xl-base-1.0", tmp_path_factory.mktemp("sdxl"))


@pytest.mark.parametrize("source", ["hub", "lab"])
def test_the_adapter_conditions_as_the_sdxl_pipeline_does(source, sdxl_base, xl_run):
    """The context the attacks use against `StableDiffusionXLPipeline.encode_prompt` and `_get_add_time_ids`
    (the pipeline's own code), and the latents against its VAE path: z = vae.encode(x).mode() * s, and
    images = vae.decode(z / s); on SDXL base's folder layout and on the lab's own SDXL target."""
    from diffusers import StableDiffusionXLPipeline

    folder = sdxl_base if source == "hub" else xl_run[0] / "epoch_0002"
    target = load_pipeline(folder)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True).to(torch.float32)
    side = target.image_shape[1]
    channels = target.image_shape[0]
    prompts = ["a handwritten digit seven", "a handwritten digit one"]
    with torch.no_grad():
        c, pooled, time_ids = target.family.embed(target, prompts)
        embeds, negative, pooled_ref, negative_pooled = pipe.encode_prompt(
            prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
        )
        ids_ref = pipe._get_add_time_ids(
            (side, side),
            (0, 0),
            (side, side),
            dtype=c.dtype,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        )
        empty = target.family.unconditional(target)
    torch.testing.assert_close(c, embeds)
    torch.testing.assert_close(pooled, pooled_ref)
    torch.testing.assert_close(time_ids, ids_ref.repeat(2, 1))
    # force_zeros_for_empty_prompt: the pipeline's unconditional branch is zeros, and so is the lab's
    assert not negative.any() and not negative_pooled.any()
    torch.testing.assert_close(empty[0], negative[:1])
    torch.testing.assert_close(empty[1], negative_pooled[:1])
    # the latents that reach the UNet, and back
    x = torch.rand(2, channels, side, side) * 2 - 1
    with torch.no_grad():
        z = target.family.to_latent(target.autoencoder, x)
        s = pipe.vae.config.scaling_factor
        torch.testing.assert_close(z, pipe.vae.encode(x).latent_dist.mode() * s)
        torch.testing.assert_close(target.family.to_image(target.autoencoder, z), pipe.vae.decode(z / s).sample)
    # the denoiser call: what the pipeline passes the UNet
    with torch.no_grad():
        t = torch.tensor([500, 500])
        out = target.family.denoise(target.unet, z, t, (c, pooled, time_ids))
        ref = pipe.unet(
            z,
            t,
            encoder_hidden_states=embeds,
            added_cond_kwargs={"text_embeds": pooled_ref, "time_ids": ids_ref.repeat(2, 1)},
        ).sample
    torch.testing.assert_close(out, ref)


def test_every_conditional_attack_scores_an_sdxl_target_with_and_without_the_caption(xl_run, tmp_path):
    from lab.attack import run as attack_run
    from lab.attacks import ATTACKS, make_attacks

    run, _ = xl_run
    names = [n for n, a in ATTACKS.items() if a.conditional_ok]
    settings = {n: quick_settings(n) for n in names}
    settings["reconstruction"]["metric"] = "mse"
    scores, _, _ = attack_run(
        str(run / "epoch_0002"), settings, out=str(tmp_path / "out"), bootstrap=5, conditions=["caption", "empty"]
    )
    for name in names:
        for label in (name, f"{name}@empty") if ATTACKS[name].uses_condition else (name,):
            rows = scores[scores.attack == label]
            assert len(rows) == 32 and rows.id.is_unique and np.isfinite(rows.score).all(), label
        calls, grads = make_attacks({name: settings[name]})[name].cost()
        rows = scores[scores.attack.str.split("@").str[0] == name]
        assert (rows.calls_per_example == calls).all() and (rows.grads_per_example == grads).all(), name
    a = scores[scores.attack == "loss"].sort_values("id").score.to_numpy()
    b = scores[scores.attack == "loss@empty"].sort_values("id").score.to_numpy()
    assert not np.allclose(a, b)  # the caption reaches the denoiser


def mismatched(folder: Path, out: Path, what: str) -> Path:
    """A copy of an SDXL folder with one part replaced by a self-consistent but mismatched one."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    if what == "projection":
        config = CLIPTextConfig(**{**pipe.text_encoder_2.config.to_dict(), "projection_dim": 8})
        pipe.text_encoder_2 = CLIPTextModelWithProjection(config)
    pipe.save_pretrained(out)
    if what == "no_text_encoder_2":
        index = json.loads((out / "model_index.json").read_text())
        index["text_encoder_2"] = [None, None]
        (out / "model_index.json").write_text(json.dumps(index))
        shutil.rmtree(out / "text_encoder_2")
    shutil.copyfile(folder / "split.json", out / "split.json")
    return out


@pytest.mark.parametrize(
    "what, message",
    [
        ("no_text_encoder_2", "an SDXL target needs its second text encoder and tokenizer (text_encoder_2/"),
        (
            "projection",
            "text_encoder_2 projects to 8 and the UNet embeds 6 time ids of 4: 32 in all, but the UNet's "
            "projection_class_embeddings_input_dim is 40",
        ),
    ],
)
def test_an_sdxl_folder_with_mismatched_parts_is_one_error_line(xl_run, tmp_path, capsys, what, message):
    run, _ = xl_run
    bad = mismatched(run / "epoch_0002", tmp_path / what, what)
    with pytest.raises(LabError) as e:
        load_pipeline(bad)
    assert message in str(e.value)
    with pytest.raises(SystemExit) as exit_:
        attack_main(["--target", str(bad), "--out", str(tmp_path / "o"), "--attacks", '{"loss": {}}'])
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lab.attack: error:") and message in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("lora", [None, "{rank: 2, alpha: 2}"])
def test_an_sdxl_target_fine_tunes_keeping_its_scheduler_and_prediction_type(xl_run, tmp_path, lora):
    """Fine-tuning starts from a local SDXL folder: its UNet, VAE, both text encoders, tokenizers and
    scheduler class come with it (here an Euler scheduler predicting v, as many SDXL fine-tunes do)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    run, _ = xl_run
    pipe = StableDiffusionXLPipeline.from_pretrained(run / "epoch_0002", local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(
        {**pipe.scheduler.config, "prediction_type": "v_prediction", "timestep_spacing": "leading"}
    )
    pipe.register_to_config(force_zeros_for_empty_prompt=False)  # the base's own empty-prompt setting is kept
    base = tmp_path / "sdxl-base"
    pipe.save_pretrained(base)
    work = tmp_path / "work"
    work.mkdir()
    extra = ["--model.init_args.lora", lora] if lora else []
    out, _ = fit_tiny(work, f"--model.init_args.pretrained={base}", "--trainer.max_epochs=1", *extra, config=XL_CONFIG)
    export = out / "epoch_0001"
    index = json.loads((export / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    assert index["force_zeros_for_empty_prompt"] is False
    target = load_target(export)
    assert target.prediction_type == "v_prediction" and target.family.name == "sdxl"
    tuned = dict(target.unet.named_parameters())
    assert any(not torch.equal(tuned[k], p) for k, p in pipe.unet.named_parameters())
    assert all(
        torch.equal(dict(target.text_encoder_2.named_parameters())[k], p)
        for k, p in pipe.text_encoder_2.named_parameters()
    )
