"""The Hub-layout builders of tests/helpers/hub_folders.py: every folder loads with plain diffusers, states the
prediction type and scheduler its repository does, and its denoiser runs a finite forward pass on a batch of 2."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
from helpers.hub_folders import EXPECTED, HUB_LAYOUTS, build_hub_folder


def load(folder, **kwargs):
    return DiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, feature_extractor=None, **kwargs
    )


def prompt_embeddings(pipe, prompts):
    """The UNet conditioning (encoder_hidden_states, added_cond_kwargs) computed as the pipelines do."""
    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    states, pooled = [], None
    for tokenizer, encoder in encoders:
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        assert ids.shape[1] == encoder.config.max_position_embeddings
        out = encoder.float()(ids, output_hidden_states=True)
        if len(encoders) == 1:
            states.append(out.last_hidden_state)
        else:  # SDXL: penultimate hidden states of both encoders, pooled projection of the second
            states.append(out.hidden_states[-2])
            pooled = getattr(out, "text_embeds", None)
    cond = torch.cat(states, dim=-1)
    if pooled is None:
        return cond, None
    side = EXPECTED["stabilityai/stable-diffusion-xl-base-1.0"]["image_size"]
    time_ids = torch.tensor([[side, side, 0, 0, side, side]] * len(prompts), dtype=torch.float32)
    return cond, {"text_embeds": pooled, "time_ids": time_ids}


@pytest.mark.parametrize("repo", HUB_LAYOUTS)
def test_hub_folder_loads_and_its_denoiser_runs(repo, tmp_path):
    expected = EXPECTED[repo]
    folder = build_hub_folder(repo, tmp_path)
    assert folder == tmp_path / repo.replace("/", "__").replace("@", "__")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == expected["pipeline"]

    if repo == "google/ddpm-cifar10-32":  # the flat layout: no subfolders, diffusers falls back to the root
        assert not any(p.is_dir() for p in folder.iterdir())
        unet = UNet2DModel.from_pretrained(folder, local_files_only=True)
        assert isinstance(DDPMScheduler.from_pretrained(folder), DDPMScheduler)
        pipe = DDPMPipeline.from_pretrained(folder, local_files_only=True)
        assert isinstance(pipe.unet, UNet2DModel)
    pipe = load(folder)
    assert type(pipe).__name__ == expected["pipeline"]
    assert type(pipe.scheduler).__name__ == expected["scheduler"]
    assert pipe.scheduler.config.prediction_type == expected["prediction_type"]

    autoencoder = getattr(pipe, "vae", None) or getattr(pipe, "vqvae", None)
    factor = 1 if autoencoder is None else 2 ** (len(autoencoder.config.block_out_channels) - 1)
    unet_config = json.loads(
        ((folder / "unet") if (folder / "unet").is_dir() else folder).joinpath("config.json").read_text()
    )
    assert unet_config["sample_size"] * factor == expected["image_size"]
    if unet_config["_diffusers_version"] < "0.9" and repo.startswith(("CompVis/stable", "runwayml")):
        # StableDiffusionPipeline's shim for pre-0.9 unet configs whose sample_size < 64 rewrites it to 64:
        # an artifact of the shrinking (the Hub's SD 1.x configs say 64), documented in hub_folders.py
        assert pipe.unet.config.sample_size == 64
    assert (autoencoder.config.in_channels if autoencoder else pipe.unet.config.in_channels) == expected["channels"]
    if repo == "CompVis/ldm-celebahq-256":  # the Hub's vqvae config states no scale
        assert "scaling_factor" not in json.loads((folder / "vqvae" / "config.json").read_text())
    elif autoencoder is not None:
        assert autoencoder.config.scaling_factor == pytest.approx(expected["scaling_factor"])
    else:
        assert expected["scaling_factor"] is None

    unet = pipe.unet.float().eval()
    side = unet_config["sample_size"]
    x = torch.randn(2, unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        if expected["conditional"]:
            cond, added = prompt_embeddings(pipe, ["a photo of a cat", ""])
            assert cond.shape[-1] == unet.config.cross_attention_dim
            out = unet(x, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
        else:
            out = unet(x, t).sample
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_fp16_revision_stores_fp16_tensors_and_says_so(tmp_path):
    folder = build_hub_folder("runwayml/stable-diffusion-v1-5@fp16", tmp_path)
    assert json.loads((folder / "text_encoder" / "config.json").read_text())["torch_dtype"] == "float16"
    state = torch.load(folder / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert not list(folder.rglob("*.safetensors"))


def test_variant_only_writes_only_fp16_safetensors_and_loads_as_the_variant(tmp_path):
    folder = build_hub_folder("runwayml/stable-diffusion-v1-5", tmp_path, variant_only=True)
    weights = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".bin", ".safetensors")
    )
    assert weights == [
        "text_encoder/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]
    pipe = load(folder, variant="fp16")
    assert {p.dtype for p in pipe.unet.parameters()} <= {torch.float16, torch.float32}


def test_the_real_texts_are_written_apart_from_the_shrunk_sizes(tmp_path):
    from helpers import hub_folders as hub

    folder = build_hub_folder("stabilityai/stable-diffusion-xl-base-1.0", tmp_path)
    assert json.loads((folder / "model_index.json").read_text()) == hub.SDXL_MODEL_INDEX
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text()) == hub.SDXL_SCHEDULER
    unet = json.loads((folder / "unet" / "config.json").read_text())
    assert list(unet) == list(hub.SDXL_UNET)  # same keys, same order
    for key in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
        assert unet[key] == hub.SDXL_UNET[key]
    vae = json.loads((folder / "vae" / "config.json").read_text())
    assert (vae["scaling_factor"], vae["force_upcast"]) == (0.13025, True)
    tok2 = json.loads((folder / "tokenizer_2" / "special_tokens_map.json").read_text())
    assert tok2["pad_token"] == "!"
    sd21 = build_hub_folder("stabilityai/stable-diffusion-2-1", tmp_path)
    index = json.loads((sd21 / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
