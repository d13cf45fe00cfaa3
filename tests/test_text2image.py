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
from conftest import ROOT, fit_tiny
from helpers import assert_same_scores, memory_text_to_image_target
from PIL import Image

T2I_CONFIG = ROOT / "configs" / "text2image_tiny.yaml"


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("t2i"), config=T2I_CONFIG)


def write_captioned_folder(
    path: Path, n: int, seed: int, fmt: str = "jsonl", column: str = "text", skip: int | None = None
) -> Path:
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
    assert len(captioned.split.captions) == 12 and all(
        any(w in c for w in DIGIT_WORDS) for c in captioned.split.captions
    )
    assert captioned.split.content_hash != plain.split.content_hash
    assert captioned.split.fingerprint() != plain.split.fingerprint()


def test_folder_captions_from_jsonl_and_csv_round_trip_through_the_split_file(tmp_path):
    from lab.data import MembershipDataModule, split_from_folders

    for fmt in ("jsonl", "csv"):
        m = write_captioned_folder(tmp_path / fmt / "m", 4, 0, fmt, column="prompt")
        n = write_captioned_folder(tmp_path / fmt / "n", 4, 1, fmt, column="prompt")
        dm = split_from_folders(str(m), str(n), image_size=16, channels=1, captions="prompt")
        by_id = dict(zip(dm.split.ids, dm.split.captions))
        assert (
            by_id["folder:m/img2.png"] == "a picture number 2 of seed 0"
            and by_id["folder:n/img3.png"] == "a picture number 3 of seed 1"
        )
        dm.split.save(tmp_path / fmt / "split.json")
        again = MembershipDataModule.from_split_file(tmp_path / fmt / "split.json")
        assert again.split.captions == dm.split.captions
    # an edited caption in the data no longer matches the split
    (tmp_path / "csv" / "m" / "metadata.csv").write_text(
        (tmp_path / "csv" / "m" / "metadata.csv").read_text().replace("number 2", "number 9")
    )
    with pytest.raises(Exception, match="content hash"):
        MembershipDataModule.from_split_file(tmp_path / "csv" / "split.json")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "captions missing for 1 of 4 images"),
        ("column", "no caption column 'prompt' (columns: text)"),
        ("none", "has no metadata.jsonl or metadata.csv"),
    ],
)
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
    assert {p.name for p in export.iterdir()} >= {
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
        "scheduler",
        "model_index.json",
        "split.json",
    }
    pipe = StableDiffusionPipeline.from_pretrained(
        export, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    assert isinstance(pipe.unet, UNet2DConditionModel)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        ["a handwritten digit seven", "a handwritten digit one"],
        height=16,
        width=16,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (2, 16, 16, 1) and np.isfinite(out).all()
    split = json.loads((export / "split.json").read_text())
    assert all("caption" in r for r in split["rows"])


def test_every_conditional_attack_gives_one_finite_score_per_example_with_and_without_the_caption(t2i_run, tmp_path):
    from lab.attack import run as attack_run
    from lab.attacks import ATTACKS, make_attacks

    run, _ = t2i_run
    from helpers import quick_settings

    names = [n for n, a in ATTACKS.items() if a.conditional_ok]
    settings = {n: quick_settings(n) for n in names}
    settings["reconstruction"]["metric"] = "mse"
    scores, table, _ = attack_run(
        str(run / "epoch_0002"), settings, out=str(tmp_path / "out"), bootstrap=5, conditions=["caption", "empty"]
    )
    n = 64
    for name in names:
        for label in (name, f"{name}@empty") if ATTACKS[name].uses_condition else (name,):
            rows = scores[scores.attack == label]
            assert len(rows) == n and rows.id.is_unique and np.isfinite(rows.score).all(), label
    assert set(scores[scores.attack == "loss@empty"].condition) == {"empty"} and set(
        scores[scores.attack == "loss"].condition
    ) == {"caption"}
    assert scores.caption.str.len().gt(0).all()
    # the caption matters to the denoiser: conditioned and unconditioned scores differ
    a = scores[scores.attack == "loss"].sort_values("id").score.to_numpy()
    b = scores[scores.attack == "loss@empty"].sort_values("id").score.to_numpy()
    assert not np.allclose(a, b)
    # each attack costs what it declares, with the caption and with the empty prompt
    for name in names:
        calls, grads = make_attacks({name: settings[name]})[name].cost()
        rows = scores[scores.attack.str.split("@").str[0] == name]
        assert (rows.calls_per_example == calls).all() and (rows.grads_per_example == grads).all(), name


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
    import pandas as pd

    from lab.attack import main as attack_main

    run, _ = t2i_run
    m = write_captioned_folder(tmp_path / "m", 6, 0)
    n = write_captioned_folder(tmp_path / "n", 6, 1)
    target = shutil.copytree(
        run / "epoch_0002", tmp_path / "sd", ignore=shutil.ignore_patterns("split.json", "target.json")
    )
    with pytest.raises(SystemExit):  # the caption column is needed for a text-to-image target
        attack_main(
            [
                "--target",
                str(target),
                "--members",
                str(m),
                "--nonmembers",
                str(n),
                "--attacks",
                "[loss]",
                "--out",
                str(tmp_path / "o1"),
            ]
        )
    assert "give --captions COLUMN" in capsys.readouterr().err
    attack_main(
        [
            "--target",
            str(target),
            "--members",
            str(m),
            "--nonmembers",
            str(n),
            "--captions",
            "text",
            "--attacks",
            "[loss, clid]",
            "--out",
            str(tmp_path / "o2"),
            "--bootstrap",
            "5",
        ]
    )
    scores = pd.read_csv(tmp_path / "o2" / "scores.csv")
    assert len(scores) == 24 and set(scores.caption.str[:16]) == {"a picture number"}


def test_a_non_sd_pipeline_cannot_be_fine_tuned_as_text_to_image(tiny_run, tmp_path, capsys):
    from lab.fit import main as fit_main

    run, _ = tiny_run
    with pytest.raises(SystemExit):
        fit_main(
            [
                "--config",
                str(T2I_CONFIG),
                "--trainer.default_root_dir",
                str(tmp_path / "ft"),
                "--model.init_args.pretrained",
                str(run / "epoch_0001"),
            ]
        )
    err = capsys.readouterr().err
    assert "lab.fit: error: model.pretrained:" in err and "holds a DDPMPipeline" in err
    assert not (tmp_path / "ft").exists()


def test_lora_fine_tuning_changes_only_the_adapters_and_its_merged_export_loads(t2i_run, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    run, _ = t2i_run
    base = run / "epoch_0002"
    out, cli = fit_tiny(
        tmp_path,
        "--trainer.default_root_dir",
        str(tmp_path / "ft"),
        "--trainer.max_epochs",
        "2",
        "--model.init_args.pretrained",
        str(base),
        "--model.init_args.lora",
        "{rank: 2, alpha: 2}",
        "--model.init_args.lr",
        "0.05",
        config=T2I_CONFIG,
    )
    module = cli.model
    pretrained = UNet2DConditionModel.from_pretrained(base / "unet", local_files_only=True)
    trained = dict(module.unet.named_parameters())
    adapters = [k for k in trained if "lora_" in k]
    assert adapters and all(trained[k].requires_grad for k in adapters)
    for name, p in pretrained.named_parameters():  # every base weight is untouched (peft keeps them under base_layer)
        key = (
            name
            if name in trained
            else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        torch.testing.assert_close(trained[key].detach(), p.detach(), msg=name)
        assert not trained[key].requires_grad
    assert any(trained[k].detach().abs().sum() > 0 for k in adapters if "lora_B" in k)  # B starts at 0 and was trained
    export = tmp_path / "ft" / "epoch_0002"
    pipe = StableDiffusionPipeline.from_pretrained(
        export, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    assert not any("lora" in k for k, _ in pipe.unet.named_parameters())  # merged: a plain UNet
    diff = sum((a - b).abs().sum() for a, b in zip(pipe.unet.parameters(), pretrained.parameters()))
    assert diff > 0
    assert json.loads((export / "target.json").read_text())["hparams"]["pretrained"] == str(base)


# ----------------------------------------------------------------------------- conditioning, in memory (fast)


@pytest.fixture(scope="module")
def memory_t2i():
    return memory_text_to_image_target()


FAST = {
    "loss": {"timesteps": [100, 300], "num_noise": 2},
    "pia": {},
    "secmi_stat": {"t_sec": 100, "interval": 50},
    "gradient_norm": {"timesteps": [100], "num_noise": 2},
    "pfami": {"timesteps": [50], "strengths": [0.9]},
    "clid": {"timesteps": [100, 200]},
}


@pytest.mark.kernel_paths
def test_conditioned_scores_do_not_depend_on_batching_or_on_which_attacks_share_calls(memory_t2i):
    """Each example is conditioned on its own caption (or on "" under empty) in every batch layout, and
    calls shared between attacks never cross conditions or captions: one attack alone, in batches of 1,
    gives the same scores as all of them in one batch under both conditions."""
    from lab.attacks import make_attacks
    from lab.scoring import score_target

    target, data = memory_t2i
    together = score_target(target, make_attacks(FAST), batch_size=6, dataset=data, conditions=("caption", "empty"))
    assert set(together.attack) == set(FAST) | {f"{n}@empty" for n in FAST if n != "clid"}
    # clid's "" reduction at t = 100 with draw 0 is loss@empty's first call: shared, and only that one
    assert together[together.attack == "loss@empty"].calls_reused_per_example.iloc[0] == 1
    for name in FAST:
        for condition in ("caption", "empty"):
            label = name if condition == "caption" else f"{name}@empty"
            if label not in set(together.attack):
                continue
            alone = score_target(
                target, make_attacks({name: FAST[name]}), batch_size=1, dataset=data, conditions=(condition,)
            )
            got = together[together.attack == label].sort_values("id").score.to_numpy()
            # batches of 1 against one batch of 6: other kernels, so equal up to rounding relative to the
            # scores' spread (CLiD's gap of two nearly equal losses amplifies rounding past any fixed atol)
            assert_same_scores(got, alone.sort_values("id").score.to_numpy(), label)
    caption = together[together.attack == "loss"].sort_values("id").score.to_numpy()
    empty = together[together.attack == "loss@empty"].sort_values("id").score.to_numpy()
    assert not np.allclose(caption, empty)


def test_a_stable_diffusion_1x_folder_is_attacked_unchanged(t2i_run, tmp_path):
    """An SD 1.x folder as save_pretrained writes it: a safety checker and a feature extractor in
    model_index.json (never loaded for attacks), a PNDM scheduler with a scaled-linear schedule."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from lab.attacks import make_attacks
    from lab.scoring import score_target
    from lab.targets.load import load_target

    run, _ = t2i_run
    base = StableDiffusionPipeline.from_pretrained(
        run / "epoch_0002", local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    tiny = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 32, "patch_size": 16}, projection_dim=8)
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    sd = StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=CLIPImageProcessor(),
        requires_safety_checker=True,
    )
    folder = tmp_path / "stable-diffusion-v1-x"
    sd.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert (
        index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
        and (folder / "feature_extractor").is_dir()
    )
    shutil.copyfile(run / "epoch_0002" / "split.json", folder / "split.json")
    target = load_target(folder)
    assert target.conditional and type(target.scheduler).__name__ == "PNDMScheduler"
    table = score_target(
        target, make_attacks({"loss": {"timesteps": [100], "num_noise": 1}, "clid": {}}), batch_size=32
    )
    assert len(table) == 2 * 64 and np.isfinite(table.score).all()


def test_the_python_api_scores_an_in_memory_stable_diffusion_pipeline_with_captions(t2i_run):
    from diffusers import StableDiffusionPipeline

    import lab
    from lab.errors import LabError

    run, _ = t2i_run
    pipe = StableDiffusionPipeline.from_pretrained(
        run / "epoch_0002", local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    g = torch.Generator().manual_seed(0)
    members, nonmembers = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1, torch.rand(6, 1, 16, 16, generator=g) * 2 - 1
    texts = [f"a handwritten digit {w}" for w in ("one", "two", "three", "four", "five", "six")]
    with pytest.raises(LabError, match="member_captions and nonmember_captions"):
        lab.evaluate(pipe, members, nonmembers, ["loss"])
    with pytest.raises(LabError, match="one string per image"):
        lab.evaluate(pipe, members, nonmembers, ["loss"], member_captions=texts[:5], nonmember_captions=texts)
    pipe.unet.train()
    metrics, scores = lab.evaluate(
        pipe,
        members,
        nonmembers,
        {"loss": {"num_noise": 1}, "clid": {}},
        member_captions=texts,
        nonmember_captions=texts[::-1],
        conditions=("caption", "empty"),
        bootstrap=5,
    )
    assert set(metrics.attack) == {"loss", "loss@empty", "clid"} and len(scores) == 36
    assert pipe.unet.training and not pipe.text_encoder.training  # the caller's modes, restored
    assert set(scores.caption) == set(texts)


@pytest.mark.parametrize(
    "edit, message",
    [
        ("library", "component 'unet' comes from 'os'"),
        ("max_length", "the tokenizer pads prompts to 100000 tokens but the text encoder takes at most 16"),
        (
            "class",
            "holds a StableDiffusion3Pipeline, which no adapter of the lab takes; supported pipelines, by family: "
            "pixel (DDPMPipeline, DDIMPipeline); latent (LDMPipeline); stable_diffusion (StableDiffusionPipeline); "
            "sdxl (StableDiffusionXLPipeline)",
        ),
    ],
)
def test_a_hostile_or_mismatched_sd_folder_is_one_error_line(t2i_run, tmp_path, capsys, edit, message):
    from lab.attack import main as attack_main

    run, _ = t2i_run
    target = shutil.copytree(run / "epoch_0002", tmp_path / "target")
    if edit in ("library", "class"):
        index = json.loads((target / "model_index.json").read_text())
        if edit == "library":
            index["unet"] = ["os", "system"]
        else:
            index["_class_name"] = "StableDiffusion3Pipeline"
        (target / "model_index.json").write_text(json.dumps(index))
    else:
        config = json.loads((target / "tokenizer" / "tokenizer_config.json").read_text())
        config["model_max_length"] = 100000
        (target / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        attack_main(["--target", str(target), "--attacks", "[loss]", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lab.attack: error:") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_shared_call_keys_take_bfloat16_inputs():
    """CPU 16-mixed runs in bfloat16, which numpy cannot hold: the shared-call key hashes raw bytes."""
    from lab.attacks.base import DenoiserCache

    x = torch.randn(2, 3, dtype=torch.bfloat16)
    assert DenoiserCache.key(None, x, torch.tensor([1, 2])) == DenoiserCache.key(None, x.clone(), torch.tensor([1, 2]))
    assert DenoiserCache.key(None, x, torch.tensor([1, 2])) != DenoiserCache.key(None, x + 1, torch.tensor([1, 2]))


def _drop_tensor(folder: Path, part: str, key: str) -> None:
    from safetensors.torch import load_file, save_file

    path = next((folder / part).glob("*.safetensors"))
    tensors = load_file(path)
    del tensors[
        next(k for k in tensors if k.endswith(key))
    ]  # the text encoder's key prefix varies with transformers' version
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "case, message",
    [
        ("unet_missing", "the checkpoint lacks weights of its model"),
        ("text_encoder_missing", "the checkpoint lacks weights of its model"),
        ("class_list", "holds a ['evil_pipe', 'EvilPipeline']"),
        ("tokenizer_too_big", "tokens but the text encoder embeds only"),
        ("members_on_bound", "records the split it was trained on"),
        ("condition_empty_list", "conditions (--condition) must list caption and/or empty"),
    ],
)
def test_red_team_findings_on_sd_folders_are_one_error_line(t2i_run, tmp_path, capsys, case, message):
    """Found by a red-team pass: each once scored silently (random weights, a dropped caption) or
    printed a traceback; each is now one error line before anything but the lock is written."""
    from lab.attack import main as attack_main

    run, _ = t2i_run
    target = shutil.copytree(run / "epoch_0002", tmp_path / "target")
    extra = []
    if case == "unet_missing":
        _drop_tensor(target, "unet", "conv_in.weight")
    elif case == "text_encoder_missing":
        _drop_tensor(target, "text_encoder", "embeddings.token_embedding.weight")
    elif case == "class_list":
        index = json.loads((target / "model_index.json").read_text())
        index["_class_name"] = ["evil_pipe", "EvilPipeline"]
        (target / "model_index.json").write_text(json.dumps(index))
    elif case == "tokenizer_too_big":
        config = json.loads((target / "text_encoder" / "config.json").read_text())
        config["vocab_size"] = 50
        (target / "text_encoder" / "config.json").write_text(json.dumps(config))
        from safetensors.torch import load_file, save_file

        path = next((target / "text_encoder").glob("*.safetensors"))
        tensors = load_file(path)
        key = next(k for k in tensors if k.endswith("token_embedding.weight"))
        tensors[key] = tensors[key][:50].contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    elif case == "members_on_bound":
        m, n = write_captioned_folder(tmp_path / "m", 4, 0), write_captioned_folder(tmp_path / "n", 4, 1)
        extra = ["--members", str(m), "--nonmembers", str(n), "--captions", "text"]
    elif case == "condition_empty_list":
        extra = ["--condition", "[]"]
    with pytest.raises(SystemExit):
        attack_main(["--target", str(target), "--attacks", "[loss]", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lab.attack: error:") and message in err[0], err
    assert not (tmp_path / "o" / "split.json").exists() and not (tmp_path / "o" / "scores.csv").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("csv_extra_field", "more or fewer fields than the header"),
        ("file_name_column", "cannot be 'file_name'"),
        ("lone_surrogate", "not valid Unicode"),
        ("jsonl_is_a_folder", "is not a file"),
    ],
)
def test_red_team_findings_on_caption_metadata_are_clear_errors(tmp_path, case, message):
    from lab.data.sources import load_source
    from lab.errors import LabError

    folder = write_captioned_folder(tmp_path / "f", 3, 0, fmt="csv" if case == "csv_extra_field" else "jsonl")
    column = "text"
    if case == "csv_extra_field":
        (folder / "metadata.csv").write_text("file_name,text\nimg0.png,a,b\nimg1.png,x\nimg2.png,y\n")
    elif case == "file_name_column":
        column = "file_name"
    elif case == "lone_surrogate":
        (folder / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": f"img{i}.png", "text": "bad \ud800"}) + "\n" for i in range(3))
        )
    elif case == "jsonl_is_a_folder":
        (folder / "metadata.jsonl").unlink()
        (folder / "metadata.jsonl").mkdir()
        (folder / "metadata.csv").write_text("file_name,text\nimg0.png,a\nimg1.png,b\nimg2.png,c\n")
    with pytest.raises(LabError, match=message.replace("(", r"\(")):
        load_source("folder", str(folder), captions=column)


def test_clid_runs_under_the_empty_prompt_alone_and_lora_needs_a_pretrained_unet(memory_t2i, tmp_path, capsys):
    from lab.attacks import make_attacks
    from lab.fit import main as fit_main
    from lab.scoring import score_target

    target, data = memory_t2i
    table = score_target(
        target,
        make_attacks({"loss": {"num_noise": 1}, "clid": {"timesteps": [100]}}),
        dataset=data,
        conditions=("empty",),
    )
    assert set(table.attack) == {"loss@empty", "clid"} and len(table) == 12
    with pytest.raises(SystemExit):
        fit_main(
            [
                "--config",
                str(T2I_CONFIG),
                "--trainer.default_root_dir",
                str(tmp_path / "ft"),
                "--model.init_args.lora",
                "{rank: 2}",
            ]
        )
    assert "lab.fit: error: model.lora adapts a pretrained UNet" in capsys.readouterr().err


def test_a_pixel_ddpm_fine_tunes_fully_from_a_pipeline_folder_and_refuses_lora(tiny_run, tmp_path, capsys):
    from diffusers import UNet2DModel

    from lab.fit import main as fit_main

    run, _ = tiny_run
    base = run / "epoch_0001"
    fit_main(
        [
            "--config",
            str(ROOT / "configs" / "ddpm_tiny.yaml"),
            "--trainer.default_root_dir",
            str(tmp_path / "ft"),
            "--trainer.max_epochs",
            "1",
            "--model.init_args.pretrained",
            str(base),
        ]
    )
    before = UNet2DModel.from_pretrained(base / "unet", local_files_only=True)
    after = UNet2DModel.from_pretrained(tmp_path / "ft" / "epoch_0001" / "unet", local_files_only=True)
    assert before.config.block_out_channels == after.config.block_out_channels
    assert (
        sum((a - b).abs().sum() for a, b in zip(after.parameters(), before.parameters())) > 0
    )  # trained from the pretrained weights
    with pytest.raises(SystemExit):
        fit_main(
            [
                "--config",
                str(ROOT / "configs" / "ddpm_tiny.yaml"),
                "--trainer.default_root_dir",
                str(tmp_path / "ft2"),
                "--model.init_args.pretrained",
                str(base),
                "--model.init_args.lora",
                "{rank: 2}",
            ]
        )
    assert "lab.fit: error: model.lora: diffusers' UNet2DModel takes no adapters" in capsys.readouterr().err
    assert not (tmp_path / "ft2").exists()


def test_sample_grids_of_a_text_to_image_target_carry_their_prompts(t2i_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = t2i_run
    events = EventAccumulator(
        str(next((run / "tensorboard").rglob("events.out.tfevents.*")).parent), size_guidance={"tensors": 0}
    ).Reload()
    assert "samples/prompts/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("samples/prompts/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "1. " in text and "digit" in text
