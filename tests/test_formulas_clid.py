"""Formula tests for text-to-image targets: the conditional loss and CLiD (Zhai et al., NeurIPS 2024,
"Membership Inference on Text-to-Image Diffusion Models via Conditional Likelihood Discrepancy").

CLiD, as documented for the lab (authors' code: github.com/zhaisf/CLiD, `mia_CLiD_clip.py`,
`mia_CLiD_impt.py`, `cal_clid_th.py`):

    l(c)   = 1/(|T| K) sum_{i, k} mean_pixels (eps(sqrt(abar_t) x0 + sqrt(1 - abar_t) e_ik, t_i, emb(c)) - e_ik)^2
    L      = -l(c)                                        (the conditional ELBO term, higher = member)
    D_j    = l(c*_j) - l(c)                               (one discrepancy per reduced caption c*_j)
    score  = alpha * mean_j D_j + (1 - alpha) * L         (higher = member; default alpha = 1)

- reduced captions ("thirds", the authors' "simple clipping", K = 4): the caption's first, middle and
  last third *in characters*, c[:n//3], c[n//3:2n//3], c[2n//3:] with n = len(c), then the empty
  caption ""; ("null", K = 1): the empty caption only.
- default timesteps [440, 450, 460], num_noise = 1: three (t, eps) pairs, as in the paper (M = N = 3).
- noise: e_ik is draw d = i * num_noise + k of the example's split row (a fresh draw for every
  (timestep, k) pair, as the authors' code takes one fresh noise per timestep), and the same e_ik is
  used for the full caption and for every reduced caption (the discrepancy is estimated on shared
  (t, eps) pairs, Eq. 13-14).
- CLiD always uses the example's caption and its reductions: the bound `condition` does not matter.
- learned variants (section 5): `clid_th` and `clid_vec` return the features [-l(c), D_1, ..., D_K];
  CLiD_th (robust scaling, alpha by fit-set AUC) and CLiD_vec (gradient boosting) are recomputed with sklearn.

The expected side is plain torch written here (tokenizer -> text encoder embedding as Stable
Diffusion does, seeded noise, q-sample, squared error), using only the documented interface
`ATTACKS[name](**settings).bind(target, condition=...).predict_step((x0, rows, captions))["values"]`.
The fixture is a tiny seeded, perturbed `UNet2DConditionModel`, a tiny seeded `CLIPTextModel` and a
`CLIPTokenizer` built from a BPE vocabulary written here: no training, no download. Each test also
checks that the documented equation differs from plausible mistakes on this fixture.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import draws, linear_abar, noise, q
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import RobustScaler, StandardScaler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from lab.attacks import ATTACKS
from lab.targets.load import Target

RTOL, ATOL = 1e-4, 1e-6
ROWS = torch.tensor([3, 0, 7, 12, 5])
CAPTIONS = [
    "a handwritten digit seven",
    "a drawing of the digit two",
    "a small photo of a digit three",
    "the digit seven",
    "a photo of the handwritten digit two",
]
DEFAULT_T = [440, 450, 460]
WORDS = ["a", "handwritten", "digit", "seven", "drawing", "of", "the", "two", "three", "photo", "small"]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: one intra-op thread avoids OpenMP oversubscription on a busy 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_bpe(folder: Path) -> tuple[Path, Path, int]:
    """A small CLIP-style BPE vocabulary: the two special tokens, every character with and without
    the end-of-word mark, and left-to-right merges that build each word of WORDS."""
    chars = sorted(set("".join(WORDS)))
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            if merge not in merges:
                merges.append(merge)
            current += piece
            if current not in vocab:
                vocab.append(current)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt", len(vocab)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(unet, text_encoder, tokenizer): seeded, perturbed, tiny; our own reference copies."""
    vocab, merges, size = write_bpe(tmp_path_factory.mktemp("tokenizer"))
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=16, pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=size,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    text_encoder = CLIPTextModel(config).float().eval()
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(
                0.05 * torch.randn(p.shape, generator=g)
            )  # zero-initialised projections too: output depends on the text
    return unet.float().eval(), text_encoder, tokenizer


@pytest.fixture(scope="module")
def target(models):
    """The lab's target, on copies: whatever `bind` does to its modules cannot touch the expected side."""
    unet, text_encoder, tokenizer = (copy.deepcopy(m) for m in models)
    return Target(
        unet=unet,
        scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000),
        split=None,
        split_path=None,
        path=None,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


@pytest.fixture(scope="module")
def x0():
    g = torch.Generator().manual_seed(7)
    return torch.rand(len(ROWS), 4, 8, 8, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def abar():
    return linear_abar()


# ----------------------------------------------------------------------------- the shared equations


def embed(models, captions: list[str]) -> torch.Tensor:
    """Stable Diffusion's prompt embedding: max-length padded ids -> last hidden state."""
    _, text_encoder, tokenizer = models
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


def err(models, abar, x0, t: int, e, emb) -> torch.Tensor:
    """Per-example mean over pixels of the squared noise-prediction error."""
    unet = models[0]
    with torch.no_grad():
        pred = unet(
            q(abar, x0, t, e), torch.full((x0.shape[0],), int(t), dtype=torch.long), encoder_hidden_states=emb
        ).sample
    return ((pred - e) ** 2).flatten(1).mean(1)


def thirds(caption: str) -> list[str]:
    """The authors' simple clipping: first, middle and last third of the caption in characters."""
    n = len(caption)
    return [caption[: n // 3], caption[n // 3 : 2 * n // 3], caption[2 * n // 3 :]]


def reduced(captions, reductions: str = "thirds") -> list[list[str]]:
    """The reduced captions c*_1 .. c*_K of each example, one list per j; the empty caption last."""
    if reductions == "thirds":
        cut = [thirds(c) for c in captions]
        return [[parts[j] for parts in cut] for j in range(3)] + [[""] * len(captions)]
    assert reductions == "null"
    return [[""] * len(captions)]


def expected_loss(models, abar, x0, captions, timesteps, num_noise, rows=ROWS):
    emb = embed(models, captions)
    total = 0
    for t in timesteps:
        for k in range(num_noise):
            e = draws(x0, k, rows)
            total = total + err(models, abar, x0, t, e, emb)
    return -total / (len(timesteps) * num_noise)


def clid_terms(
    models,
    abar,
    x0,
    captions,
    timesteps=DEFAULT_T,
    num_noise=1,
    reductions="thirds",
    rows=ROWS,
    draw_index=lambda i, k, num_noise: i * num_noise + k,
    reduced_offset=0,
    seed=0,
    reduce=thirds,
):
    """(l(c), [l(c*_j)]) per example. `draw_index`, `reduced_offset` and `reduce` exist only to build
    the plausible mistakes of the teeth tests; their defaults are the documented equation."""
    variants = [list(captions)]
    if reduce is thirds:
        variants += reduced(captions, reductions)
    else:
        cut = [reduce(c) for c in captions]
        variants += [[parts[j] for parts in cut] for j in range(3)] + [[""] * len(captions)]
    embs = [embed(models, v) for v in variants]
    sums = [0.0] * len(variants)
    for i, t in enumerate(timesteps):
        for k in range(num_noise):
            d = draw_index(i, k, num_noise)
            for v, emb in enumerate(embs):
                e = draws(x0, d + (reduced_offset if v > 0 else 0), rows, seed)
                sums[v] = sums[v] + err(models, abar, x0, t, e, emb)
    n = len(timesteps) * num_noise
    return sums[0] / n, [s / n for s in sums[1:]]


def clid_from_terms(l_c, l_red, alpha=1.0, sign=1, combine="mean"):
    D = torch.stack([lj - l_c for lj in l_red], 1)
    D = D.mean(1) if combine == "mean" else D.sum(1)
    return alpha * sign * D + (1 - alpha) * (-l_c)


def expected_clid(models, abar, x0, captions, alpha=1.0, **kwargs):
    l_c, l_red = clid_terms(models, abar, x0, captions, **kwargs)
    return clid_from_terms(l_c, l_red, alpha)


def predict(target, name, x0, captions, rows=ROWS, condition="caption", **settings) -> torch.Tensor:
    attack = ATTACKS[name](**settings).bind(target, condition=condition)
    with torch.inference_mode():
        out = attack.predict_step((x0.clone(), rows.clone(), list(captions)))
    values = out["values"]
    values = values.detach().clone() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    assert values.shape == (len(rows),)
    return values.float().cpu()


def differ(a, b):
    return not torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def close(got, expected):
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- our own side


def test_fixture_depends_on_the_caption(models, x0):
    unet = models[0]
    e = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    t = torch.full((len(x0),), 450, dtype=torch.long)
    with torch.no_grad():
        a = unet(x0 + e, t, encoder_hidden_states=embed(models, CAPTIONS)).sample
        b = unet(x0 + e, t, encoder_hidden_states=embed(models, [""] * len(x0))).sample
        c = unet(x0 + e, t, encoder_hidden_states=embed(models, CAPTIONS[1:] + CAPTIONS[:1])).sample
    assert a.std() > 1e-2 and differ(a, b) and differ(a, c)


def test_tokenizer_and_reductions_are_as_documented(models):
    tokenizer = models[2]
    ids = tokenizer(["a handwritten digit seven", ""], padding="max_length", max_length=16, truncation=True).input_ids
    words = tokenizer.convert_ids_to_tokens(ids[0][:6])
    assert words == ["<|startoftext|>", "a</w>", "handwritten</w>", "digit</w>", "seven</w>", "<|endoftext|>"]
    assert ids[1][:2] == [0, 1] and len(ids[1]) == 16
    # thirds are cut in characters (int(len / 3) as in the authors' code), not in words
    assert thirds("a handwritten digit seven") == ["a handwr", "itten di", "git seven"]
    assert thirds("the digit seven") == ["the d", "igit ", "seven"]
    for c in CAPTIONS:
        n = len(c)
        assert thirds(c) == [c[: int(n / 3)], c[int(n / 3) : int(2 * n / 3)], c[int(2 * n / 3) :]]
        assert "".join(thirds(c)) == c


def test_own_recomputation_agrees_with_a_batched_one(models, abar, x0):
    """Our loop over (t, k, caption) equals one batched call per caption with F.mse_loss over the
    (timestep, pixel) block of each example, the way the authors' code computes it."""
    l_c, l_red = clid_terms(models, abar, x0, CAPTIONS)
    unet = models[0]
    variants = [CAPTIONS] + reduced(CAPTIONS)
    got = []
    for caps in variants:
        per = []
        for b in range(len(x0)):
            e = torch.stack([noise(int(ROWS[b]), i, x0.shape[1:]) for i in range(len(DEFAULT_T))])
            ts = torch.tensor(DEFAULT_T)
            ab = abar[ts].view(-1, 1, 1, 1)
            xt = ab.sqrt() * x0[b].expand(len(ts), -1, -1, -1) + (1 - ab).sqrt() * e
            emb = embed(models, [caps[b]] * len(ts))
            with torch.no_grad():
                pred = unet(xt, ts, encoder_hidden_states=emb).sample
            per.append(F.mse_loss(pred, e, reduction="mean"))
        got.append(torch.stack(per))
    close(l_c, got[0])
    for a, b in zip(l_red, got[1:]):
        close(a, b)


# ----------------------------------------------------------------------------- 1. conditional loss


def test_loss_with_the_caption_and_with_the_empty_prompt(models, target, abar, x0):
    settings = dict(timesteps=[10, 300], num_noise=2, seed=0)
    with_caption = expected_loss(models, abar, x0, CAPTIONS, [10, 300], 2)
    empty = expected_loss(models, abar, x0, [""] * len(CAPTIONS), [10, 300], 2)
    close(predict(target, "loss", x0, CAPTIONS, condition="caption", **settings), with_caption)
    close(predict(target, "loss", x0, CAPTIONS, condition="empty", **settings), empty)
    assert differ(with_caption, empty)
    # seeding by batch position instead of split row would give another score
    assert differ(with_caption, expected_loss(models, abar, x0, CAPTIONS, [10, 300], 2, rows=torch.arange(len(ROWS))))


# ----------------------------------------------------------------------------- 2. CLiD


@pytest.fixture(scope="module")
def terms(models, abar, x0):
    return clid_terms(models, abar, x0, CAPTIONS)


@pytest.fixture(scope="module")
def clid_default(terms):
    return clid_from_terms(*terms)


@pytest.mark.parametrize("condition", ["caption", "empty"])
def test_clid_default_matches_the_paper(target, x0, clid_default, condition):
    close(predict(target, "clid", x0, CAPTIONS, condition=condition), clid_default)


def test_clid_default_settings_spelled_out(target, x0, clid_default):
    got = predict(
        target, "clid", x0, CAPTIONS, timesteps=DEFAULT_T, num_noise=1, alpha=1.0, reductions="thirds", seed=0
    )
    close(got, clid_default)


@pytest.mark.parametrize("alpha", [0.3, 0.99])
def test_clid_with_alpha_mixes_in_the_conditional_loss(target, x0, terms, alpha):
    # raw (unscaled) terms: alpha * mean_j D_j + (1 - alpha) * L
    expected = clid_from_terms(*terms, alpha=alpha)
    close(predict(target, "clid", x0, CAPTIONS, alpha=alpha), expected)
    # alpha = 0 is the conditional ELBO term alone
    close(predict(target, "clid", x0, CAPTIONS, alpha=0.0), -terms[0])


def test_clid_with_other_settings(models, target, abar, x0):
    expected = expected_clid(models, abar, x0, CAPTIONS, alpha=0.5, timesteps=[100, 700], num_noise=2, seed=3)
    got = predict(target, "clid", x0, CAPTIONS, timesteps=[100, 700], num_noise=2, alpha=0.5, seed=3)
    close(got, expected)


def test_clid_null_reduction(models, target, abar, x0):
    expected = expected_clid(models, abar, x0, CAPTIONS, reductions="null")
    close(predict(target, "clid", x0, CAPTIONS, reductions="null"), expected)


# ----------------------------------------------------------------------------- 3. teeth


def test_clid_differs_from_plausible_mistakes(models, abar, x0, terms, clid_default):
    l_c, l_red = terms
    correct_mix = clid_from_terms(l_c, l_red, alpha=0.5)
    # wrong sign of the discrepancy (reduced minus full caption is the documented one)
    assert differ(clid_default, clid_from_terms(l_c, l_red, sign=-1))
    assert differ(correct_mix, clid_from_terms(l_c, l_red, alpha=0.5, sign=-1))
    # only the empty caption instead of the three thirds and the empty caption
    assert differ(clid_default, clid_from_terms(l_c, l_red[-1:]))
    # no reduced caption at all: the conditional loss alone
    assert differ(clid_default, -l_c)
    # the alpha term missing (discrepancy alone) when alpha = 0.5
    assert differ(correct_mix, clid_from_terms(l_c, l_red, alpha=1.0))
    # sum over the reduced captions instead of their mean: changes the weight against L, and with
    # alpha = 0.99 (where the two raw terms are of comparable size on this fixture) the ranking
    assert differ(correct_mix, clid_from_terms(l_c, l_red, alpha=0.5, combine="sum"))
    mean99, sum99 = clid_from_terms(l_c, l_red, alpha=0.99), clid_from_terms(l_c, l_red, alpha=0.99, combine="sum")
    assert mean99.argsort().tolist() != sum99.argsort().tolist()
    # only the empty caption ranks the examples differently from the four reductions
    assert clid_default.argsort().tolist() != clid_from_terms(l_c, l_red[-1:]).argsort().tolist()
    # L with a + sign (the plain loss instead of the ELBO term)
    assert differ(correct_mix, 0.5 * clid_from_terms(l_c, l_red) + 0.5 * l_c)

    # words instead of characters for the thirds
    def word_thirds(c):
        w = c.split()
        n = len(w)
        return [" ".join(w[: n // 3]), " ".join(w[n // 3 : 2 * n // 3]), " ".join(w[2 * n // 3 :])]

    assert differ(clid_default, expected_clid(models, abar, x0, CAPTIONS, reduce=word_thirds))


def test_clid_noise_rule_has_teeth(models, abar, x0, clid_default):
    # other noise for the reduced captions than for the full caption
    assert differ(clid_default, expected_clid(models, abar, x0, CAPTIONS, reduced_offset=len(DEFAULT_T)))
    # one draw shared by all timesteps (the `loss` attack's rule) instead of a fresh draw per timestep
    assert differ(clid_default, expected_clid(models, abar, x0, CAPTIONS, draw_index=lambda i, k, n: k))
    # seeding by batch position instead of split row
    assert differ(clid_default, expected_clid(models, abar, x0, CAPTIONS, rows=torch.arange(len(ROWS))))


# ----------------------------------------------------------------------------- 4. properties


def test_clid_changing_one_caption_changes_only_that_score(target, x0, clid_default):
    captions = list(CAPTIONS)
    captions[2] = "a drawing of the digit seven"
    got = predict(target, "clid", x0, captions)
    changed = torch.zeros(len(ROWS), dtype=torch.bool)
    changed[2] = True
    close(got[~changed], clid_default[~changed])
    assert differ(got[changed], clid_default[changed])


def test_clid_is_independent_of_batch_order(target, x0, clid_default):
    perm = torch.tensor([4, 2, 0, 3, 1])
    got = predict(target, "clid", x0[perm], [CAPTIONS[i] for i in perm], rows=ROWS[perm])
    close(got, clid_default[perm])


# ----------------------------------------------------------------------------- 5. learned CLiD: CLiD_th and CLiD_vec
#
# Features (both variants), one row per example, higher = member in every column:
#
#     V = [-l(c), l(c*_1) - l(c), ..., l(c*_K) - l(c)]      (reductions in the order first, middle, last third, "")
#
# with l and the noise rule exactly as for the `clid` score above.
#
# CLiD_th (paper Eq. 16, authors' `cal_clid_th.py`): the pair P = [Dbar, -l(c)], Dbar = mean_j D_j; an sklearn
# RobustScaler (median, IQR 25-75) fitted on P of the fit set; alpha in [0.0, 0.1, ..., 1.0] chosen by the fit-set
# roc_auc_score of alpha S(Dbar) + (1 - alpha) S(-l) (the first best wins on ties); decision = that mix for any rows.
#
# CLiD_vec (Eq. 17-18, the authors' XGBoost replaced by sklearn's gradient boosting): GradientBoostingClassifier(
# n_estimators=trees, max_depth=3, learning_rate=0.3, subsample=0.7, max_features=0.7, random_state=seed) on the raw
# features (float64) and the membership labels; decision = predict_proba[:, 1], the member probability.

ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
LEARNED = {"clid_th": {}, "clid_vec": {"trees": 20}}


def predict_features(target, name, x0, captions, rows=ROWS, **settings) -> torch.Tensor:
    attack = ATTACKS[name](**settings).bind(target)
    with torch.inference_mode():
        out = attack.predict_step((x0.clone(), rows.clone(), list(captions)))
    values = out["values"]
    values = values.detach().clone() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    return values.double().cpu()


def expected_features(l_c, l_red) -> torch.Tensor:
    return torch.stack([-l_c] + [lj - l_c for lj in l_red], 1).double()


@pytest.mark.parametrize("name", list(LEARNED))
@pytest.mark.parametrize("reductions", ["thirds", "null"])
def test_learned_clid_features(models, target, abar, x0, terms, name, reductions):
    l_c, l_red = terms if reductions == "thirds" else clid_terms(models, abar, x0, CAPTIONS, reductions="null")
    expected = expected_features(l_c, l_red)
    assert expected.shape == (len(ROWS), 5 if reductions == "thirds" else 2)
    if reductions == "null":  # the null column is the same number in both modes (same noise, same captions)
        close(expected[:, 1], expected_features(*terms)[:, -1])
    perm = torch.tensor([4, 2, 0, 3, 1])
    got = predict_features(
        target,
        name,
        x0[perm],
        [CAPTIONS[i] for i in perm],
        rows=ROWS[perm],
        timesteps=DEFAULT_T,
        num_noise=1,
        reductions=reductions,
        seed=0,
        **LEARNED[name],
    )
    assert got.shape == expected.shape
    close(got, expected[perm])
    # teeth: the columns are distinct numbers, so their order and signs matter
    for a in range(expected.shape[1]):
        for b in range(a + 1, expected.shape[1]):
            assert differ(expected[:, a], expected[:, b])
            assert differ(expected[:, a], -expected[:, b])


# --------------------------------------------------------------------------- CLiD_th on hand-made features


def handmade(seed: int, n: int = 40, shift_l: float = 0.6, shift_d: float = 0.6, outliers: bool = True):
    """(features (n, 5) float32, is_member (n,)): -l around -0.5 and D_j around 1e-3 as on real targets, both
    shifted up for the members (every other row) by `shift` of their spread, and three heavy outliers in the D_j
    (so that the robust and the standard scaler disagree)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, dtype=torch.bool)
    y[::2] = True
    neg_l = -0.5 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64) + 0.1 * shift_l * y
    D = 2e-3 * torch.randn(n, 4, generator=g, dtype=torch.float64) + 2e-3 * shift_d * y[:, None]
    if outliers:
        D[:3] *= 25
    return torch.cat([neg_l[:, None], D], 1).float(), y


def separable_pair(n: int = 40):
    """Both -l and Dbar separate members from non-members perfectly: every alpha has fit-set AUC 1."""
    feats, y = handmade(5, n=n, outliers=False)
    feats = feats.double()
    feats[y, 0] += 1.0
    feats[y, 1:] += 0.05
    return feats.float(), y


def th_pair(feats, dbar="mean", l_sign=1):
    f = np.asarray(torch.as_tensor(feats).double().numpy())
    D = {"mean": f[:, 1:].mean(1), "sum": f[:, 1:].sum(1), "first3": f[:, 1:4].mean(1), "all": f.mean(1)}[dbar]
    return np.stack([D, l_sign * f[:, 0]], 1)


def th_fit(feats, y, scaler=RobustScaler, pick="first", **pair):
    """Our CLiD_th: (scaler, alpha, fit-set AUC per alpha)."""
    P = th_pair(feats, **pair)
    s = scaler().fit(P)
    S = s.transform(P)
    aucs = [roc_auc_score(np.asarray(y), a * S[:, 0] + (1 - a) * S[:, 1]) for a in ALPHAS]
    best = max(aucs)
    i = aucs.index(best) if pick == "first" else len(aucs) - 1 - aucs[::-1].index(best)
    return s, ALPHAS[i], aucs


def th_decision(model, feats, **pair):
    s, alpha, _ = model
    S = s.transform(th_pair(feats, **pair))
    return torch.from_numpy(alpha * S[:, 0] + (1 - alpha) * S[:, 1])


def th_expected(feats, y, other, **kwargs):
    pair = {k: v for k, v in kwargs.items() if k in ("dbar", "l_sign")}
    model = th_fit(feats, y, **kwargs)
    return th_decision(model, feats, **pair), th_decision(model, other, **pair), model[1]


def mann_whitney(y, score):
    """AUC as P(member score > non-member score) + 1/2 P(equal), by counting pairs."""
    y = np.asarray(y, dtype=bool)
    m, h = score[y][:, None], score[~y][None, :]
    return ((m > h).sum() + 0.5 * (m == h).sum()) / (m.size * h.size)


TH_CASES = {
    # an intermediate alpha is the unique best: 0.6
    "intermediate": lambda: handmade(8),
    # alpha 0.6 and 0.7 tie for the best fit-set AUC (317 / 400): the first one wins
    "tie": lambda: handmade(3),
    # every alpha has AUC 1: the first one, 0.0, wins
    "separable": separable_pair,
}
TH_ALPHA = {"intermediate": 0.6, "tie": 0.6, "separable": 0.0}


def test_own_clid_th_recomputed_two_ways():
    """sklearn's RobustScaler and roc_auc_score against np.percentile and pair counting."""
    for make in TH_CASES.values():
        feats, y = make()
        f = feats.double().numpy()
        P = np.stack([f[:, 1:].mean(1), f[:, 0]], 1)
        med = np.median(P, 0)
        iqr = np.percentile(P, 75, axis=0) - np.percentile(P, 25, axis=0)
        S = (P - med) / iqr
        s, alpha, aucs = th_fit(feats, y)
        np.testing.assert_allclose(s.transform(P), S, rtol=1e-12, atol=1e-12)
        manual = [mann_whitney(y.numpy(), a * S[:, 0] + (1 - a) * S[:, 1]) for a in ALPHAS]
        np.testing.assert_allclose(aucs, manual, rtol=0, atol=1e-12)
        assert alpha == ALPHAS[int(np.argmax(manual))]  # argmax: the first best


@pytest.mark.parametrize("case", list(TH_CASES))
def test_clid_th_fit_and_decision(target, case):
    feats, y = TH_CASES[case]()
    other, _ = handmade(101, n=17)  # rows the scaler and alpha were not fitted on
    expected_fit, expected_other, alpha = th_expected(feats, y, other)
    assert alpha == TH_ALPHA[case]
    attack = ATTACKS["clid_th"](timesteps=DEFAULT_T, num_noise=1, reductions="thirds", seed=0).bind(target)
    attack.fit(feats.clone(), y.clone())
    got_fit = torch.as_tensor(attack.decision(feats.clone())).double().reshape(-1)
    got_other = torch.as_tensor(attack.decision(other.clone())).double().reshape(-1)
    close(got_fit, expected_fit)
    close(got_other, expected_other)


def test_clid_th_null_reduction_fit_and_decision(target):
    feats, y = handmade(8)
    feats = feats[:, [0, 4]].contiguous()  # [-l, D_null]: K = 1
    other = handmade(101, n=17)[0][:, [0, 4]].contiguous()
    expected_fit, expected_other, _ = th_expected(feats, y, other)
    attack = ATTACKS["clid_th"](timesteps=DEFAULT_T, num_noise=1, reductions="null", seed=0).bind(target)
    attack.fit(feats.clone(), y.clone())
    close(torch.as_tensor(attack.decision(feats.clone())).double().reshape(-1), expected_fit)
    close(torch.as_tensor(attack.decision(other.clone())).double().reshape(-1), expected_other)


def test_clid_th_cases_have_teeth():
    other, _ = handmade(101, n=17)
    alphas = {}
    for case, make in TH_CASES.items():
        feats, y = make()
        right_fit, right_other, alpha = th_expected(feats, y, other)
        alphas[case] = alpha
        mistakes = {
            "StandardScaler": th_expected(feats, y, other, scaler=StandardScaler),
            "-l with the wrong sign": th_expected(feats, y, other, l_sign=-1),
        }
        if alpha > 0:  # (at alpha = 0 the decision is S(-l) alone: how Dbar is built does not show)
            mistakes["mean over the three thirds only"] = th_expected(feats, y, other, dbar="first3")
            mistakes["mean over every column, -l included"] = th_expected(feats, y, other, dbar="all")
        if case != "intermediate":
            mistakes["last best alpha"] = th_expected(feats, y, other, pick="last")
        for what, (wrong_fit, wrong_other, _) in mistakes.items():
            assert differ(right_fit, wrong_fit) and differ(right_other, wrong_other), f"{case}: {what}"
        # sum instead of mean over the D_j: the robust scaler divides the factor K out again, so the decision is
        # the same (no mistake to catch once scaled); the implementation's invariance is tested below
        close(th_expected(feats, y, other, dbar="sum")[0], right_fit)
    # the chosen alpha is not always at an end of the grid, and the tie is between two intermediate alphas
    assert 0 < alphas["intermediate"] < 1 and 0 < alphas["tie"] < 1
    _, _, aucs = th_fit(*TH_CASES["intermediate"]())
    assert max(aucs) > max(aucs[0], aucs[-1]) + 0.01
    assert th_expected(*TH_CASES["tie"](), other, pick="last")[2] == 0.7
    assert th_expected(*TH_CASES["separable"](), other, pick="last")[2] == 1.0
    # the standard scaler picks another alpha on the intermediate and tie cases
    assert th_expected(*TH_CASES["intermediate"](), other, scaler=StandardScaler)[2] != 0.6
    assert th_expected(*TH_CASES["tie"](), other, scaler=StandardScaler)[2] != 0.6


def test_clid_th_decision_is_scale_free_per_feature(target):
    """Robust scaling per feature: multiplying every D_j by K (their sum instead of their mean) or shifting -l by
    a constant leaves the fitted decision unchanged."""
    feats, y = handmade(8)
    other, _ = handmade(101, n=17)
    a = ATTACKS["clid_th"](timesteps=DEFAULT_T, num_noise=1, reductions="thirds", seed=0).bind(target)
    a.fit(feats.clone(), y.clone())
    base = torch.as_tensor(a.decision(other.clone())).double().reshape(-1)

    def moved(f):
        f = f.double().clone()
        f[:, 1:] *= 4
        f[:, 0] += 0.25
        return f.float()

    b = ATTACKS["clid_th"](timesteps=DEFAULT_T, num_noise=1, reductions="thirds", seed=0).bind(target)
    b.fit(moved(feats), y.clone())
    torch.testing.assert_close(
        torch.as_tensor(b.decision(moved(other))).double().reshape(-1), base, rtol=1e-4, atol=1e-5
    )


# --------------------------------------------------------------------------- CLiD_vec on hand-made features


def gbc(feats, y, trees=20, seed=0):
    model = GradientBoostingClassifier(
        n_estimators=trees, max_depth=3, learning_rate=0.3, subsample=0.7, max_features=0.7, random_state=seed
    )
    return model.fit(feats.double().numpy(), np.asarray(y))


def member_probability(model, feats) -> torch.Tensor:
    assert list(model.classes_) == [False, True]
    return torch.from_numpy(model.predict_proba(feats.double().numpy())[:, 1])


def vec_decision(target, feats, y, rows, trees=20, seed=0, reductions="thirds") -> torch.Tensor:
    attack = ATTACKS["clid_vec"](timesteps=DEFAULT_T, num_noise=1, reductions=reductions, trees=trees, seed=seed)
    attack.bind(target)
    attack.fit(feats.clone(), y.clone())
    return torch.as_tensor(attack.decision(rows.clone())).double().reshape(-1)


@pytest.mark.parametrize("trees, seed", [(20, 0), (7, 3)])
def test_clid_vec_is_gradient_boosting_member_probability(target, trees, seed):
    feats, y = handmade(8)
    other, _ = handmade(101, n=17)
    model = gbc(feats, y, trees, seed)
    close(vec_decision(target, feats, y, feats, trees, seed), member_probability(model, feats))
    close(vec_decision(target, feats, y, other, trees, seed), member_probability(model, other))


def test_clid_vec_null_reduction(target):
    feats, y = handmade(3)
    feats = feats[:, [0, 4]].contiguous()
    close(vec_decision(target, feats, y, feats, reductions="null"), member_probability(gbc(feats, y), feats))


def test_clid_vec_depends_on_the_labels_and_scores_members_high(target):
    feats, y = handmade(8)
    p = member_probability(gbc(feats, y), feats)
    # our side: the settings matter (seed, trees), the fit separates its training rows, flipped labels give ~ 1 - p
    assert differ(p, member_probability(gbc(feats, y, seed=1), feats))
    assert differ(p, member_probability(gbc(feats, y, trees=7), feats))
    assert roc_auc_score(y.numpy(), p.numpy()) > 0.99
    flipped = member_probability(gbc(feats, ~y), feats)
    assert (p + flipped - 1).abs().max() < 0.05
    # the implementation
    got = vec_decision(target, feats, y, feats)
    assert ((got >= 0) & (got <= 1)).all()
    assert roc_auc_score(y.numpy(), got.numpy()) > 0.99  # member probability, not the hold-out one
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    shuffled = vec_decision(target, feats, y[perm], feats)
    assert differ(got, shuffled)
    close(shuffled, member_probability(gbc(feats, y[perm]), feats))
    got_flipped = vec_decision(target, feats, ~y, feats)
    assert (got + got_flipped - 1).abs().max() < 0.05
    assert roc_auc_score(y.numpy(), got_flipped.numpy()) < 0.01
