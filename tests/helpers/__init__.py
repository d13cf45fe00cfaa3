"""What several test files share: the formula tests' plain-torch side of the papers' equations (the
noise schedule, the documented seeding rule, DDIM moves), their fixed random UNets, and one way to
compare scores computed along two kernel paths.

The plain-torch helpers are written from the papers and the lab's documented conventions, never
from `lab.attacks`' code, so a formula test built on them is an independent recomputation.
"""

from __future__ import annotations

import json
import os

import numpy as np

# ----------------------------------------------------------------------------- fixed random denoisers


def random_unet():
    """The formula tests' fixed UNet: seeded random weights, no training, each parameter perturbed
    (0.05 x N(0, 1)) so that its output depends on its input and on t."""
    import diffusers
    import torch

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return unet.float().eval()


def random_conditional_unet(channels: int = 1, cross_attention_dim: int = 16, perturb: bool = True):
    """A seeded tiny UNet2DConditionModel (8x8, cross-attention in the first level), each parameter
    perturbed like `random_unet` so that its output depends on the prompt embedding."""
    import diffusers
    import torch

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
    )
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return unet


def memory_text_to_image_target():
    """A random tiny text-to-image target in memory (no autoencoder: the UNet denoises 1x8x8 inputs)
    with 6 captioned examples (4 in validation, 2 in test), and their dataset."""
    import torch
    from diffusers import DDPMScheduler

    from lab.data.datamodule import SplitDataset
    from lab.data.split import MembershipSplit
    from lab.targets.load import Target
    from lab.targets.text import build_text_encoder, build_tokenizer

    captions = [
        "a handwritten digit seven",
        "a photo of the number two",
        "the digit one, written by hand",
        "a handwritten digit four",
        "a photo of the number nine",
        "the digit zero, written by hand",
    ]
    split = MembershipSplit(
        ids=[f"x{i}" for i in range(6)],
        roles=["member", "nonmember"] * 3,
        eval_splits=["validation"] * 4 + ["test"] * 2,
        seed=0,
        captions=captions,
    )
    target = Target(
        random_conditional_unet().eval(),
        DDPMScheduler(num_train_timesteps=1000),
        split,
        None,
        None,
        text_encoder=build_text_encoder(300, hidden_size=16, layers=1, max_length=16),
        tokenizer=build_tokenizer(captions, 300),
    )
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return target, SplitDataset(images, list(range(6)))


# ----------------------------------------------------------------------------- the shared equations


def linear_abar():
    """abar_t of DDPM's linear schedule (betas 1e-4 .. 0.02 over 1000 steps), written out independently
    of diffusers and checked against its scheduler; abar[0] = 0.9999, as both PIA's and SecMI's code index it."""
    import diffusers
    import torch

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    a = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(a, diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.float())
    return a


def noise(row: int, d: int, shape, seed: int = 0):
    """The documented seeding rule: draw d for split row `row` under attack seed `seed`."""
    import torch

    state = int(np.random.SeedSequence([seed, int(row), int(d)]).generate_state(1)[0])
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(state))


def draws(x0, d: int, rows, seed: int = 0):
    """Draw d of every example (its split row in `rows`), stacked like `x0`."""
    import torch

    return torch.stack([noise(int(r), d, x0.shape[1:], seed) for r in rows])


def eps(unet, x, t: int):
    """eps_theta(x, t) of an unconditional denoiser, without gradients."""
    import torch

    with torch.no_grad():
        return unet(x, torch.full((x.shape[0],), int(t), dtype=torch.long)).sample


def q(abar, x0, t: int, e):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e."""
    return abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * e


def move(abar, x, s: int, t: int, e):
    """Deterministic DDIM move (eta = 0) of x from timestep s to timestep t given the noise prediction e."""
    x0_pred = (x - (1 - abar[s]).sqrt() * e) / abar[s].sqrt()
    return abar[t].sqrt() * x0_pred + (1 - abar[t]).sqrt() * e


def pix_mean(v):
    return v.flatten(1).mean(1)


def differ(a, b, rtol: float = 1e-3, atol: float = 1e-5) -> bool:
    """Two results are told apart (a planted mistake must move the score by more than this)."""
    import torch

    return not torch.allclose(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- scores along two kernel paths

# Of the scores' standard deviation across examples. Measured: at most 1.4e-4 (secmi_stat on the 2-epoch tiny
# target, whose scores barely vary: sd 3e-5 of scores about 1e-3) between this CPU's AVX-512 kernels and the
# generic ones with oneDNN off and MKL at SSE4.2; 1e-5 for CLiD's gap; LAB_TOLERANCE_LOG measures it again.
SPREAD_TOLERANCE = 1e-3


def assert_same_scores(got, expected, label: str = "", spread: float = SPREAD_TOLERANCE) -> None:
    """Scores of the same examples computed along two paths (batch sizes, calls shared between attacks or
    not, one process or two) agree up to float rounding.

    Why this tolerance: a CPU kernel's rounding depends on the batch size and the CPU (oneDNN and MKL pick
    other code paths on other instruction sets), at about 1e-7 of the *terms* a score is built from. A score
    that is a difference of two nearly equal losses (CLiD's gap) or a ratio amplifies that far past any fixed
    tolerance on the score itself; what a score is for is ranking examples, so the tolerance is relative to
    the scores' spread across examples. A difference below `spread` x sd reorders only examples closer than
    that (0.1% of the spread), and moves no AUC; a real mistake (another caption, another draw of noise, a
    call shared across conditions) moves scores by a sizable fraction of their sd.
    `LAB_TOLERANCE_LOG=FILE` appends each comparison's max |difference| / sd to FILE, to measure the margin.
    """
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{label}: {got.shape} scores vs {expected.shape}"
    assert np.isfinite(got).all() and np.isfinite(expected).all(), f"{label}: non-finite scores"
    sd = float(expected.std())
    assert sd > 0, f"{label}: the scores do not vary across examples: nothing to compare them against"
    ratio = float(np.abs(got - expected).max()) / sd
    if os.environ.get("LAB_TOLERANCE_LOG"):
        with open(os.environ["LAB_TOLERANCE_LOG"], "a") as f:
            f.write(json.dumps({"label": label, "ratio": ratio, "sd": sd}) + "\n")
    assert ratio <= spread, f"{label}: max |difference| is {ratio:.2e} of the scores' sd (tolerance {spread:.0e})"


# ----------------------------------------------------------------------------- the attacks' cost contract

# Settings that keep each attack quick on the tests' tiny targets; an attack not named runs at its defaults.
QUICK_SETTINGS = {
    "loss": {"timesteps": [10, 50], "num_noise": 2},
    "multistep_loss": {"grid_step": 50, "truncation": 100},
    "secmi_nn": {"epochs": 5},
    "pfami": {"timesteps": [0, 50], "strengths": [0.9, 0.8]},
    "pfami_nn": {"timesteps": [0, 50], "strengths": [0.9, 0.8]},
    "gsa1": {"timesteps": [99, 499], "trees": 10},
    "gsa2": {"timesteps": [99, 499], "trees": 10},
    "gradient_norm": {"timesteps": [100], "num_noise": 2},
    "reconstruction": {"timestep": 100, "steps": 4},
    "graybox": {"grid_step": 50, "truncation": 100},
    "blackbox": {"num_samples": 8, "steps": 3},
    "lira": {"timesteps": [100], "num_noise": 1},
    "rmia": {"timesteps": [100], "num_noise": 1},
    "clid": {"timesteps": [100, 200]},
    "clid_th": {"timesteps": [100, 200]},
    "clid_vec": {"timesteps": [100, 200], "trees": 5},
}


def quick_settings(name: str) -> dict:
    return dict(QUICK_SETTINGS.get(name, {}))


def assert_keeps_its_cost(table, attack, n_examples: int, label: str = "") -> None:
    """One finite score per example, and the denoiser calls and backward passes that `score_target`
    counted per example are the ones the attack declares (`Attack.cost()`, its docstring's "Cost")."""
    calls, grads = attack.cost()
    assert len(table) == n_examples == table.id.nunique(), label
    assert np.isfinite(table.score).all(), label
    assert (table.calls_per_example == calls).all(), (
        f"{label}: counted {set(table.calls_per_example)}, declared {calls}"
    )
    assert (table.grads_per_example == grads).all(), (
        f"{label}: counted {set(table.grads_per_example)}, declared {grads}"
    )
