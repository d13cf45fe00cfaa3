"""Pipeline folders as the Hub ships them (issue "Every diffusers denoiser, part 1"): weights stored in
fp16 or only as an fp16 variant, `.bin` next to `.safetensors`, and CompVis' LDM whose vqvae config
states no latent scale. Each is loaded as its own pipeline would load it and attacked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, LDMPipeline
from test_latent import image_folder, tiny_unet, tiny_vq

from lab.attack import run
from lab.errors import LabError
from lab.targets.load import load_pipeline


def ddpm(seed: int = 0) -> DDPMPipeline:
    torch.manual_seed(seed)
    return DDPMPipeline(unet=tiny_unet(3, 16), scheduler=DDPMScheduler())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    members, nonmembers = image_folder(root / "members", 6, 0), image_folder(root / "nonmembers", 8, 1)
    return root, {"members": str(members), "nonmembers": str(nonmembers)}


def scores_of(target, folders, out):
    root, sides = folders
    scores, _, _ = run(str(target), {"loss": {"num_noise": 1}, "pia": {}}, out=str(root / out), bootstrap=5, **sides)
    return scores.sort_values(["attack", "id"]).score.to_numpy()


def test_fp16_weights_and_fp16_variant_only_folders_are_attacked_in_float32(folders):
    root, _ = folders
    half = ddpm().to(torch.float16)
    half.save_pretrained(root / "fp16_weights")  # a pipeline saved after torch_dtype=torch.float16
    half.save_pretrained(root / "fp16_variant", variant="fp16")  # only diffusion_pytorch_model.fp16.safetensors
    assert [p.name for p in (root / "fp16_variant" / "unet").glob("*.safetensors")] == [
        "diffusion_pytorch_model.fp16.safetensors"
    ]
    ddpm().to(torch.float16).to(torch.float32).save_pretrained(root / "fp32_of_fp16")  # the same values in fp32
    for name in ("fp16_weights", "fp16_variant"):
        target = load_pipeline(root / name)
        assert {p.dtype for p in target.unet.parameters()} == {torch.float32}, name
    reference = scores_of(root / "fp32_of_fp16", folders, "o32")
    assert np.isfinite(reference).all()
    for name in ("fp16_weights", "fp16_variant"):  # the same weights, the same kernels: the same scores
        np.testing.assert_array_equal(scores_of(root / name, folders, f"o_{name}"), reference)


def test_fp16_weights_that_overflowed_are_refused(tmp_path):
    pipe = ddpm()
    with torch.no_grad():
        pipe.unet.conv_out.weight[0].fill_(1e6)  # past fp16's 65504: inf once stored in fp16
    pipe.to(torch.float16).save_pretrained(tmp_path / "inf")
    with pytest.raises(LabError, match=r"unet: weight conv_out.weight holds inf or NaN"):
        load_pipeline(tmp_path / "inf")


def test_safetensors_are_loaded_where_a_bin_lies_beside_them(tmp_path):
    ddpm(0).save_pretrained(tmp_path / "both")
    other = ddpm(1).unet.state_dict()
    torch.save(other, tmp_path / "both" / "unet" / "diffusion_pytorch_model.bin")
    loaded = load_pipeline(tmp_path / "both").unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ddpm(0).unet.state_dict().items())
    assert not all(torch.equal(loaded[k], v) for k, v in other.items())


def test_an_ldm_whose_vqvae_states_no_scale_gets_unscaled_latents(tmp_path):
    """CompVis/ldm-celebahq-256's vqvae/config.json has no scaling_factor: its UNet was trained on the
    VQ encoder's raw output, so the latents reaching it are E(x) itself, not 0.18215 E(x) (diffusers'
    class default; diffusers issue #6725). A folder that states its scale keeps it."""
    from lab.targets.autoencoder import encode

    torch.manual_seed(0)
    pipe = LDMPipeline(vqvae=tiny_vq(), unet=tiny_unet(3, 8), scheduler=DDPMScheduler())
    pipe.vqvae.register_to_config(scaling_factor=0.5)
    pipe.save_pretrained(tmp_path / "stated")
    pipe.save_pretrained(tmp_path / "compvis")
    config = tmp_path / "compvis" / "vqvae" / "config.json"
    raw = json.loads(config.read_text())
    del raw["scaling_factor"]
    config.write_text(json.dumps(raw))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        plain = pipe.vqvae.encode(x).latents
        compvis = encode(load_pipeline(tmp_path / "compvis").autoencoder, x)
        stated = encode(load_pipeline(tmp_path / "stated").autoencoder, x)
    torch.testing.assert_close(compvis, plain)
    torch.testing.assert_close(stated, 0.5 * plain)


def test_a_text_encoder_saved_in_fp16_is_upcast_with_the_rest(tmp_path):
    """A folder saved after loading in float16 (or the fp16 revision of SD 1.5): transformers 5 loads the
    text encoder in the dtype its config records, while diffusers loads the UNet in float32; attacking
    then failed with "expected m1 and m2 to have the same dtype". Everything is float32 once loaded."""
    import shutil

    from conftest import ROOT, fit_tiny
    from transformers import CLIPTextModel

    from lab.attacks import make_attacks
    from lab.scoring import score_target
    from lab.targets.load import load_target

    run, _ = fit_tiny(tmp_path, config=ROOT / "configs" / "text2image_tiny.yaml")
    folder = shutil.copytree(run / "epoch_0002", tmp_path / "fp16_text")
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).to(torch.float16)
    encoder.save_pretrained(folder / "text_encoder")
    assert CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).dtype == torch.float16
    target = load_target(folder)
    assert {p.dtype for p in target.text_encoder.parameters()} == {torch.float32}
    table = score_target(target, make_attacks({"loss": {"num_noise": 1}}))
    assert np.isfinite(table.score).all()
