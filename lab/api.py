"""The Python API: attack a diffusers pipeline held in memory, from a notebook or a script.

    import lab
    from diffusers import DDPMPipeline
    pipe = DDPMPipeline.from_pretrained("checkpoints/ddpm_mnist/epoch_0100", local_files_only=True)
    metrics, scores = lab.evaluate(pipe, members=member_images, nonmembers=other_images, attacks=["loss", "pia"])
    metrics[["attack", "auc", "auc_lo", "auc_hi", "tpr@0.01fpr"]]

`members` / `nonmembers` are image tensors (N, C, H, W) in [-1, 1] at the pipeline's size, or
folders of images (read and resized as `lab.attack --members/--nonmembers` does). Each side is
halved into validation and test with `seed` (thresholds and learned attacks use validation;
metrics are on test), exactly as the CLIs do, and the same metrics table comes back (one row per
attack), with the scores table (one row per attack and example). The pipeline's modules are put in
eval mode without gradients while scoring and restored afterwards.

A text-to-image pipeline (`StableDiffusionPipeline`, `StableDiffusionXLPipeline`) needs captions:
`member_captions` / `nonmember_captions` (one string per image) with tensors, or
`captions="text"` (the metadata column) with folders;
`conditions=("caption", "empty")` adds each attack with the empty prompt (`<attack>@empty`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lab.attacks import make_attacks
from lab.data.datamodule import SplitDataset
from lab.data.split import MembershipSplit, draw_split
from lab.errors import LabError, check_number
from lab.report import metrics_table
from lab.scoring import score_target
from lab.targets.load import target_from_pipeline


def evaluate(
    pipeline,
    members,
    nonmembers,
    attacks: list | dict = ("loss", "pia"),
    *,
    seed: int = 0,
    batch_size: int = 64,
    bootstrap: int = 200,
    trainer: dict | None = None,
    member_captions: list[str] | None = None,
    nonmember_captions: list[str] | None = None,
    captions: str | None = None,
    conditions: tuple[str, ...] = ("caption",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics table, scores table) of `attacks` on `pipeline` with the given members and non-members."""
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("bootstrap", bootstrap, minimum=1, integer=True)
    parts = ("unet", "vqvae", "vae", "text_encoder", "text_encoder_2")
    modules = [m for m in (getattr(pipeline, name, None) for name in parts) if isinstance(m, torch.nn.Module)]
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    grads = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    tensors = [(t, t.dtype) for m in modules for t in (*m.parameters(), *m.buffers())]
    try:
        return _evaluate(
            pipeline,
            members,
            nonmembers,
            attacks,
            seed,
            batch_size,
            bootstrap,
            trainer,
            (member_captions, nonmember_captions),
            captions,
            conditions,
        )
    finally:  # the caller's pipeline as it was given (loading a target sets eval mode and freezes it)
        for sub, training in modes:
            sub.training = training
        # and in its own dtypes: a Trainer precision of "16-true"/"bf16-true" converts the modules it scores,
        # possibly under inference mode (which leaves inference tensors that refuse requires_grad)
        for t, dtype in tensors:
            if t.dtype != dtype or t.is_inference():
                t.data = t.data.to(dtype).clone()
        for p, g in grads:
            p.requires_grad_(g)


def _evaluate(
    pipeline, members, nonmembers, attacks, seed, batch_size, bootstrap, trainer, texts, captions, conditions
):
    from lab.scoring import check_conditions

    target = target_from_pipeline(pipeline)
    conditions = check_conditions(conditions)
    built = make_attacks(list(attacks) if not isinstance(attacks, dict) else attacks)
    channels, size, _ = target.image_shape
    if isinstance(members, (str, Path)) or isinstance(nonmembers, (str, Path)):
        from lab.data import split_from_folders

        if not (isinstance(members, (str, Path)) and isinstance(nonmembers, (str, Path))):
            raise LabError("give members and non-members the same way: two folders, or two tensors")
        if texts[0] is not None or texts[1] is not None:
            raise LabError(
                "with folders the captions come from their metadata files (captions='text'), "
                "not member_captions / nonmember_captions"
            )
        if target.conditional and not captions:
            raise LabError(
                "a text-to-image pipeline: give captions='text' (the caption column of each folder's metadata.jsonl)"
            )
        data = split_from_folders(
            str(members), str(nonmembers), image_size=size, channels=channels, seed=seed, captions=captions
        )
        split, dataset = data.split, data.dataset()
    else:
        m, n = _images(members, "members", channels, size), _images(nonmembers, "nonmembers", channels, size)
        split, dataset = _tensor_split(m, n, seed, _captions(texts, (len(m), len(n)), target.conditional))
    target.split = split
    scores = score_target(target, built, batch_size, trainer, dataset=dataset, conditions=conditions)
    return metrics_table(scores, bootstrap=bootstrap), scores


def _images(x, what: str, channels: int, size: int) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise LabError(
            f"{what}: an image tensor (N, C, H, W) in [-1, 1] or a folder of images, got {type(x).__name__}"
        )
    if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise LabError(
            f"{what}: the pipeline takes images of shape (N, {channels}, {size}, {size}), got {tuple(x.shape)}"
        )
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all() or x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
        raise LabError(
            f"{what}: pixel values must be finite and in [-1, 1] (as diffusers pipelines take them), "
            f"got [{x.min().item():.3g}, {x.max().item():.3g}]"
        )
    if len(x) < 4:
        raise LabError(f"{what}: at least 4 images (each side is halved into validation and test), got {len(x)}")
    return x


def _captions(texts, sizes: tuple[int, int], needed: bool) -> list[str] | None:
    """member + non-member captions, checked (None when neither is given)."""
    if texts[0] is None and texts[1] is None:
        if needed:
            raise LabError(
                "a text-to-image pipeline: give member_captions and nonmember_captions (one string per image)"
            )
        return None
    from lab.data.sources import check_caption

    for what, text, n in zip(("member_captions", "nonmember_captions"), texts, sizes):
        if not isinstance(text, (list, tuple)) or len(text) != n:
            raise LabError(
                f"{what}: one string per image ({n}), got {type(text).__name__}"
                + (f" of length {len(text)}" if isinstance(text, (list, tuple)) else "")
            )
        for i, c in enumerate(text):
            check_caption(c, f"{what}[{i}]")
    return list(texts[0]) + list(texts[1])


def _tensor_split(
    members: torch.Tensor, nonmembers: torch.Tensor, seed: int, captions: list[str] | None = None
) -> tuple[MembershipSplit, SplitDataset]:
    pools = (
        [f"tensor:members/{i}" for i in range(len(members))],
        [f"tensor:nonmembers/{i}" for i in range(len(nonmembers))],
    )
    ids, roles, splits = draw_split(*pools, len(members), len(nonmembers), seed)
    by_id = dict(zip(pools[0] + pools[1], torch.cat([members, nonmembers])))
    images = torch.stack([by_id[i] for i in ids])
    text = dict(zip(pools[0] + pools[1], captions)) if captions is not None else None
    split = MembershipSplit(
        ids=ids, roles=roles, eval_splits=splits, seed=seed, captions=[text[i] for i in ids] if text else None
    )
    return split, SplitDataset(images, list(range(len(ids))))
