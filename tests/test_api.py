"""The Python API (`lab.evaluate`): an in-memory pipeline, tensors or folders, the CLIs' numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline
from PIL import Image
from test_latent import tiny_unet, tiny_vq

import lab
from lab.errors import LabError


def pipeline():
    torch.manual_seed(0)
    return DDPMPipeline(unet=tiny_unet(3, 16), scheduler=DDPMScheduler())


def images(n, seed):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_five_lines_from_tensors_to_a_metrics_table():
    pipe = pipeline()
    pipe.unet.train()
    metrics, scores = lab.evaluate(
        pipe, members=images(8, 0), nonmembers=images(12, 1), attacks=["loss", "pia", "sima"], bootstrap=20
    )
    assert list(metrics.attack) == ["loss", "pia", "sima"] and metrics.auc.between(0, 1).all()
    assert (metrics.n_members == 4).all() and (metrics.n_nonmembers == 6).all()  # the test halves
    assert (
        len(scores) == 3 * 20
        and scores.groupby("attack").id.nunique().eq(20).all()
        and np.isfinite(scores.score).all()
    )
    assert set(scores[scores.role == "member"].id) == {f"tensor:members/{i}" for i in range(8)}
    assert pipe.unet.training and all(p.requires_grad for p in pipe.unet.parameters())  # left as it was given


def test_the_api_gives_the_cli_numbers(tmp_path):
    """The same pipeline and images through `lab.evaluate` (folders) and `lab.attack` give equal scores."""
    from lab.attack import run

    pipe = pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    for name, n, seed in (("members", 6, 0), ("nonmembers", 8, 1)):
        (tmp_path / name).mkdir()
        for i, x in enumerate(images(n, seed)):
            Image.fromarray(((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(
                tmp_path / name / f"{i:03d}.png"
            )
    _, api_scores = lab.evaluate(
        pipe, tmp_path / "members", tmp_path / "nonmembers", attacks=["loss", "pia"], bootstrap=10
    )
    cli_scores, _, _ = run(
        str(tmp_path / "pipe"),
        ["loss", "pia"],
        members=str(tmp_path / "members"),
        nonmembers=str(tmp_path / "nonmembers"),
        out=str(tmp_path / "out"),
        bootstrap=10,
    )
    key = ["attack", "id"]
    a, c = api_scores.sort_values(key).reset_index(drop=True), cli_scores.sort_values(key).reset_index(drop=True)
    pd.testing.assert_series_equal(a.score, c.score)
    assert (a.split == c.split).all() and (a.role == c.role).all()


def test_a_latent_pipeline_in_memory():
    torch.manual_seed(0)
    pipe = LDMPipeline(vqvae=tiny_vq(), unet=tiny_unet(3, 8), scheduler=DDIMScheduler())
    metrics, _ = lab.evaluate(pipe, images(4, 0), images(4, 1), attacks=["loss"], bootstrap=5)
    assert len(metrics) == 1


def test_bad_input_is_one_clear_error():
    pipe = pipeline()
    cases = [
        (dict(members=images(8, 0)[:, :1], nonmembers=images(8, 1)), "shape (N, 3, 16, 16), got (8, 1, 16, 16)"),
        (dict(members=images(8, 0) * 3, nonmembers=images(8, 1)), "must be finite and in [-1, 1]"),
        (dict(members=images(8, 0), nonmembers="some/folder"), "the same way"),
        (dict(members=images(2, 0), nonmembers=images(8, 1)), "at least 4 images"),
        (dict(members=[1, 2], nonmembers=images(8, 1)), "an image tensor"),
        (dict(members=images(8, 0), nonmembers=images(8, 1), attacks=["pia"], bootstrap=0), "bootstrap must be >= 1"),
        (dict(members=images(8, 0), nonmembers=images(8, 1), attacks=["piaa"]), "unknown attack 'piaa'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LabError, match=None) as e:
            lab.evaluate(pipe, **kwargs)
        assert message in str(e.value), (message, str(e.value))
    with pytest.raises(LabError, match="supported pipelines"):
        lab.evaluate(object(), images(8, 0), images(8, 1))
