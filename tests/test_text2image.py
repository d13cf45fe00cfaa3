"""Text-to-image targets: captions as data, the conditional latent target trained by lab.fit, its
StableDiffusionPipeline export, attacks conditioned on the caption or the empty prompt, LoRA
fine-tuning of a pretrained pipeline, and one clear error line for each kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, fit_tiny

T2I_CONFIG = ROOT / "configs" / "text2image_tiny.yaml"


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("t2i"), config=T2I_CONFIG)


def write_captioned_folder(path: Path, n: int, seed: int, fmt: str = "jsonl", column: str = "text", skip: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path / f"img{i}.png")
        if i != skip:
            rows.append({"file_name": f"img{i}.png", column: f"a picture number {i} of seed {seed}"})
    if fmt == "jsonl":
        (path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        lines = ["file_name," + column] + [f"{r['file_name']},{r[column]}" for r in rows]
        (path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- captions as data


def test_bundled_digits_get_generated_captions_that_enter_the_hash_and_fingerprint():
    from lab.data import MembershipDataModule
    from lab.data.sources import DIGIT_WORDS

    plain = MembershipDataModule(source="digits", members=6, nonmembers=6, image_size=8)
    captioned = MembershipDataModule(source="digits", members=6, nonmembers=6, image_size=8, captions="text")
    assert plain.split.captions is None and plain.split.ids == captioned.split.ids
    assert len(captioned.split.captions) == 12 and all(any(w in c for w in DIGIT_WORDS) for c in captioned.split.captions)
    assert captioned.split.content_hash != plain.split.content_hash
    assert captioned.split.fingerprint() != plain.split.fingerprint()


def test_folder_captions_from_jsonl_and_csv_round_trip_through_the_split_file(tmp_path):
    from lab.data import MembershipDataModule, split_from_folders

    for fmt in ("jsonl", "csv"):
        m = write_captioned_folder(tmp_path / fmt / "m", 4, 0, fmt, column="prompt")
        n = write_captioned_folder(tmp_path / fmt / "n", 4, 1, fmt, column="prompt")
        dm = split_from_folders(str(m), str(n), image_size=16, channels=1, captions="prompt")
        by_id = dict(zip(dm.split.ids, dm.split.captions))
        assert by_id[f"folder:m/img2.png"] == "a picture number 2 of seed 0" and by_id["folder:n/img3.png"] == "a picture number 3 of seed 1"
        dm.split.save(tmp_path / fmt / "split.json")
        again = MembershipDataModule.from_split_file(tmp_path / fmt / "split.json")
        assert again.split.captions == dm.split.captions
    # an edited caption in the data no longer matches the split
    (tmp_path / "csv" / "m" / "metadata.csv").write_text((tmp_path / "csv" / "m" / "metadata.csv").read_text().replace("number 2", "number 9"))
    with pytest.raises(Exception, match="content hash"):
        MembershipDataModule.from_split_file(tmp_path / "csv" / "split.json")


@pytest.mark.parametrize("case, message", [
    ("missing", "captions missing for 1 of 4 images"),
    ("column", "no caption column 'prompt' (columns: text)"),
    ("none", "has no metadata.jsonl or metadata.csv"),
])
def test_bad_captions_are_one_clear_error(tmp_path, case, message):
    from lab.data.sources import load_source
    from lab.errors import LabError

    folder = write_captioned_folder(tmp_path / "f", 4, 0, skip=2 if case == "missing" else None)
    if case == "none":
        (folder / "metadata.jsonl").unlink()
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_source("folder", str(folder), captions="prompt" if case == "column" else "text")


# ----------------------------------------------------------------------------- the target and its export


def test_fit_exports_a_stable_diffusion_pipeline_that_diffusers_samples_from_offline(t2i_run):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    run, _ = t2i_run
    export = run / "epoch_0002"
    assert {p.name for p in export.iterdir()} >= {"text_encoder", "tokenizer", "unet", "vae", "scheduler", "model_index.json", "split.json"}
    pipe = StableDiffusionPipeline.from_pretrained(export, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    assert isinstance(pipe.unet, UNet2DConditionModel)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a handwritten digit seven", "a handwritten digit one"], height=16, width=16, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 16, 16, 1) and np.isfinite(out).all()
    split = json.loads((export / "split.json").read_text())
    assert all("caption" in r for r in split["rows"])


def test_every_conditional_attack_gives_one_finite_score_per_example_with_and_without_the_caption(t2i_run, tmp_path):
    from lab.attack import run as attack_run
    from lab.attacks import ATTACKS

    run, _ = t2i_run
    from test_attacks import COSTS

    names = [n for n, a in ATTACKS.items() if a.conditional_ok]
    settings = {n: dict(COSTS.get(n, ({}, 0))[0]) for n in names}
    settings["reconstruction"]["metric"] = "mse"
    scores, table, _ = attack_run(str(run / "epoch_0002"), settings, out=str(tmp_path / "out"), bootstrap=5, conditions=["caption", "empty"])
    n = 64
    for name in names:
        for label in (name, f"{name}@empty"):
            rows = scores[scores.attack == label]
            assert len(rows) == n and rows.id.is_unique and np.isfinite(rows.score).all(), label
    assert set(scores[scores.attack == "loss@empty"].condition) == {"empty"} and set(scores[scores.attack == "loss"].condition) == {"caption"}
    assert scores.caption.str.len().gt(0).all()
    # the caption matters to the denoiser: conditioned and unconditioned scores differ
    a = scores[scores.attack == "loss"].sort_values("id").score.to_numpy()
    b = scores[scores.attack == "loss@empty"].sort_values("id").score.to_numpy()
    assert not np.allclose(a, b)
    # CLiD: 15 denoiser calls per example at the paper's defaults
    assert (scores[scores.attack == "clid"].calls_per_example == 15).all()


def test_attacks_that_cannot_condition_refuse_a_text_to_image_target(t2i_run, tmp_path, capsys):
    from lab.attack import main as attack_main

    run, _ = t2i_run
    for name in ("blackbox", "lira"):
        with pytest.raises(SystemExit):
            attack_main(["--target", str(run / "epoch_0002"), "--attacks", f"[{name}]", "--out", str(tmp_path / name)])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lab.attack: error:") and "text-to-image" in err[0]
        assert not (tmp_path / name / "scores.csv").exists()


def test_clid_refuses_an_unconditional_target(tiny_run, tmp_path, capsys):
    from lab.attack import main as attack_main

    run, _ = tiny_run
    with pytest.raises(SystemExit):
        attack_main(["--target", str(run / "epoch_0001"), "--attacks", "[clid]", "--out", str(tmp_path / "o")])
    assert "lab.attack: error: clid needs a text-to-image target" in capsys.readouterr().err


def test_a_text_encoder_narrower_than_the_cross_attention_is_refused(t2i_run, tmp_path, capsys):
    from lab.attack import main as attack_main

    run, _ = t2i_run
    target = shutil.copytree(run / "epoch_0002", tmp_path / "target")
    config = json.loads((target / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 24
    (target / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        attack_main(["--target", str(target), "--attacks", "[loss]", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "lab.attack: error:" in err and ("cross-attention" in err or "cannot load" in err)


def test_members_and_nonmembers_folders_with_captions_attack_an_sd_folder(t2i_run, tmp_path, capsys):
    from lab.attack import main as attack_main
    import pandas as pd

    run, _ = t2i_run
    m = write_captioned_folder(tmp_path / "m", 6, 0)
    n = write_captioned_folder(tmp_path / "n", 6, 1)
    target = shutil.copytree(run / "epoch_0002", tmp_path / "sd", ignore=shutil.ignore_patterns("split.json", "target.json"))
    with pytest.raises(SystemExit):  # the caption column is needed for a text-to-image target
        attack_main(["--target", str(target), "--members", str(m), "--nonmembers", str(n), "--attacks", "[loss]", "--out", str(tmp_path / "o1")])
    assert "give --captions COLUMN" in capsys.readouterr().err
    attack_main(["--target", str(target), "--members", str(m), "--nonmembers", str(n), "--captions", "text",
                 "--attacks", "[loss, clid]", "--out", str(tmp_path / "o2"), "--bootstrap", "5"])
    scores = pd.read_csv(tmp_path / "o2" / "scores.csv")
    assert len(scores) == 24 and set(scores.caption.str[:16]) == {"a picture number"}


def test_a_non_sd_pipeline_cannot_be_fine_tuned_as_text_to_image(tiny_run, tmp_path, capsys):
    from lab.fit import main as fit_main

    run, _ = tiny_run
    with pytest.raises(SystemExit):
        fit_main(["--config", str(T2I_CONFIG), "--trainer.default_root_dir", str(tmp_path / "ft"),
                  "--model.init_args.pretrained", str(run / "epoch_0001")])
    err = capsys.readouterr().err
    assert "lab.fit: error: model.pretrained:" in err and "holds a DDPMPipeline" in err
    assert not (tmp_path / "ft").exists()


def test_lora_fine_tuning_changes_only_the_adapters_and_its_merged_export_loads(t2i_run, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    run, _ = t2i_run
    base = run / "epoch_0002"
    out, cli = fit_tiny(tmp_path, "--trainer.default_root_dir", str(tmp_path / "ft"), "--trainer.max_epochs", "2",
                        "--model.init_args.pretrained", str(base), "--model.init_args.lora", "{rank: 2, alpha: 2}",
                        "--model.init_args.lr", "0.05", config=T2I_CONFIG)
    module = cli.model
    pretrained = UNet2DConditionModel.from_pretrained(base / "unet", local_files_only=True)
    trained = dict(module.unet.named_parameters())
    adapters = [k for k in trained if "lora_" in k]
    assert adapters and all(trained[k].requires_grad for k in adapters)
    for name, p in pretrained.named_parameters():  # every base weight is untouched (peft keeps them under base_layer)
        key = name if name in trained else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        torch.testing.assert_close(trained[key].detach(), p.detach(), msg=name)
        assert not trained[key].requires_grad
    assert any(trained[k].detach().abs().sum() > 0 for k in adapters if "lora_B" in k)  # B starts at 0 and was trained
    export = tmp_path / "ft" / "epoch_0002"
    pipe = StableDiffusionPipeline.from_pretrained(export, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    assert not any("lora" in k for k, _ in pipe.unet.named_parameters())  # merged: a plain UNet
    diff = sum((a - b).abs().sum() for a, b in zip(pipe.unet.parameters(), pretrained.parameters()))
    assert diff > 0
    assert json.loads((export / "target.json").read_text())["hparams"]["pretrained"] == str(base)
