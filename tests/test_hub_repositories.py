"""The seven Hub repositories of issue "Every diffusers denoiser, part 1", as their folders are laid out
(`tests/helpers/hub_folders.py`: the real config texts and file names, each with its source; random
weights, shrunk sizes), loaded by the lab and attacked end to end through `lab.attack`: finite scores,
the repository's own prediction type, scheduler and latent scale, every weight in float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.hub_folders import EXPECTED, HUB_LAYOUTS, build_hub_folder
from PIL import Image

from lab.attack import run
from lab.attacks import ATTACKS
from lab.targets.load import load_pipeline

ATTACKED = {"loss": {"timesteps": [100], "num_noise": 1}, "pia": {"timestep": 100}}


def image_folder(path, n: int, seed: int, side: int, captions: bool):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a photo of face number {i}"})
    if captions:
        (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def attack(folder, target, tmp_path):
    side, conditional = target.image_shape[1], target.conditional
    members = image_folder(tmp_path / "m", 4, 0, side, conditional)
    nonmembers = image_folder(tmp_path / "n", 4, 1, side, conditional)
    scores, _, _ = run(
        str(folder),
        ATTACKED,
        out=str(tmp_path / "out"),
        bootstrap=5,
        members=members,
        nonmembers=nonmembers,
        captions="text" if conditional else None,
    )
    return scores


@pytest.mark.parametrize("repo", HUB_LAYOUTS)
def test_each_hub_repository_is_attacked_end_to_end_as_its_own_pipeline_would_run_it(repo, tmp_path):
    expected = EXPECTED[repo]
    folder = build_hub_folder(repo, tmp_path / "hub")
    target = load_pipeline(folder)
    assert type(target.scheduler).__name__ == expected["scheduler"]
    assert target.prediction_type == expected["prediction_type"]
    assert target.conditional == expected["conditional"]
    assert (
        target.family.name
        == {
            "DDPMPipeline": "pixel",
            "LDMPipeline": "latent",
            "StableDiffusionPipeline": "stable_diffusion",
            "StableDiffusionXLPipeline": "sdxl",
        }[expected["pipeline"]]
    )
    parts = [target.unet, target.autoencoder, target.text_encoder, target.text_encoder_2]
    assert {p.dtype for m in parts if m is not None for p in m.parameters()} == {torch.float32}
    if target.autoencoder is not None:  # the latent scale of the repository's own pipeline
        scale = expected["scaling_factor"] if expected["scaling_factor"] is not None else 1.0
        assert target.autoencoder.config.scaling_factor == pytest.approx(scale)
    bound = ATTACKS["loss"]().bind(target)
    assert bound.prediction_type == expected["prediction_type"] and bound.family is target.family
    scores = attack(folder, target, tmp_path)
    for name in ATTACKED:
        rows = scores[scores.attack == name]
        assert len(rows) == 8 and rows.id.is_unique and np.isfinite(rows.score).all(), name


@pytest.mark.parametrize("repo", ["runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0"])
def test_fp16_variant_only_folders_of_hub_repositories_load_that_variant(repo, tmp_path):
    folder = build_hub_folder(repo, tmp_path / "hub", variant_only=True)
    names = {f.name for f in folder.rglob("*.safetensors")}
    assert names and all(".fp16." in n for n in names)
    target = load_pipeline(folder)
    assert {p.dtype for p in target.unet.parameters()} == {torch.float32}
    assert target.prediction_type == EXPECTED[repo]["prediction_type"]


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def fine_tune(config: str, base, out, *extra):
    from lab.fit import main as fit_main

    fit_main(
        [
            "--config",
            str(ROOT / "configs" / config),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.max_epochs",
            "1",
            "--model.init_args.pretrained",
            str(base),
            *extra,
        ]
    )
    return out / "epoch_0001"


def test_the_flat_ddpm_cifar10_layout_fine_tunes_and_its_export_is_attacked(tmp_path):
    """google/ddpm-cifar10-32 keeps config.json, scheduler_config.json and its weights at the root."""
    from diffusers import UNet2DModel

    base = build_hub_folder("google/ddpm-cifar10-32", tmp_path / "hub")
    assert (base / "config.json").is_file() and not (base / "unet").exists()
    export = fine_tune("ddpm_tiny.yaml", base, tmp_path / "ft", "--data.image_size", "32", "--data.channels", "3")
    index = json.loads((export / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    before = UNet2DModel.from_pretrained(base, local_files_only=True)
    after = UNet2DModel.from_pretrained(export / "unet", local_files_only=True)
    assert any(not torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))
    scores, _, _ = run(str(export), ATTACKED, out=str(tmp_path / "out"), bootstrap=5)
    assert np.isfinite(scores.score).all() and len(scores) == 2 * 64


def test_stable_diffusion_2_1_fine_tunes_as_the_v_model_it_is(tmp_path, capsys):
    """Fine-tuning keeps SD 2.1's v-prediction and its own scheduler, and refuses to change them."""
    base = build_hub_folder("stabilityai/stable-diffusion-2-1", tmp_path / "hub")
    side = str(EXPECTED["stabilityai/stable-diffusion-2-1"]["image_size"])
    export = fine_tune(
        "text2image_tiny.yaml", base, tmp_path / "ft", "--data.image_size", side, "--data.channels", "3"
    )
    scheduler = json.loads((export / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["prediction_type"] == "v_prediction"
    target = load_pipeline(export)
    assert target.prediction_type == "v_prediction"
    with pytest.raises(SystemExit):
        fine_tune(
            "text2image_tiny.yaml",
            base,
            tmp_path / "ft2",
            "--data.image_size",
            side,
            "--data.channels",
            "3",
            "--model.init_args.prediction_type",
            "epsilon",
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lab.fit: error: model.prediction_type 'epsilon' differs from the pretrained")
    assert not (tmp_path / "ft2").exists()
