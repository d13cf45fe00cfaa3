"""The text side of a text-to-image target: a CLIP tokenizer and text encoder built locally, and
Stable Diffusion's prompt embedding.

Nothing is downloaded. The tokenizer is a byte-level BPE (`transformers.CLIPTokenizer`) whose
vocabulary the lab writes: every printable ASCII character (with and without the end-of-word mark),
then one merge chain per word of the captions, most frequent words first, up to `vocab_size`.
Words beyond that are spelled as characters. The vocabulary comes from every caption of the split,
members and non-members alike, so how a caption is tokenised never tells the two apart.

    ids = tokenizer(prompts, padding="max_length", max_length=model_max_length, truncation=True)
    c   = text_encoder(ids).last_hidden_state        (what StableDiffusionPipeline.encode_prompt gives)

The empty prompt "" embedded the same way is the unconditional embedding of classifier-free guidance.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
from collections import Counter
from pathlib import Path

import torch

from lab.errors import LabError

SPECIAL = ("<|startoftext|>", "<|endoftext|>")
CHARS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")  # CLIP's pre-tokenizer split, on lowercased ASCII


def build_tokenizer(
    captions: list[str], vocab_size: int = 1000, max_length: int = 16, folder: str | Path | None = None
):
    """A `CLIPTokenizer` for `captions` (written to `folder`, or a temporary folder, and loaded from it)."""
    from transformers import CLIPTokenizer

    vocab = list(SPECIAL) + CHARS + [c + "</w>" for c in CHARS]
    if vocab_size < len(vocab):
        raise LabError(
            f"the text encoder's vocab_size must be at least {len(vocab)} (special tokens and characters), "
            f"got {vocab_size}"
        )
    known, merges = set(vocab), []
    counts = Counter(w for caption in captions for w in WORD.findall(caption.lower()) if len(w) > 1 and w.isascii())
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        pieces, new = list(word[:-1]) + [word[-1] + "</w>"], []
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            if merged not in known:
                new.append(merged)
            pieces = [merged] + pieces[2:]
        if len(vocab) + len(new) > vocab_size:
            merges = merges[: len(merges) - (len(word) - 1)]
            break
        vocab += new
        known.update(new)
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="lab_tokenizer_"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"})
    )
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def build_text_encoder(
    vocab_size: int, hidden_size: int = 32, layers: int = 2, heads: int = 2, max_length: int = 16, seed: int = 0
):
    """A randomly initialised (seeded) `CLIPTextModel`, frozen in eval mode."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if hidden_size % heads:
        raise LabError(f"text encoder hidden_size {hidden_size} must be divisible by its {heads} heads")
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_length,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval().requires_grad_(False)


def encode_prompts(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(N, L, D) prompt embeddings, as `StableDiffusionPipeline.encode_prompt` computes them (no clip skip)."""
    device = next(text_encoder.parameters()).device
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    ids, mask = tokens.input_ids, None
    if getattr(text_encoder.config, "use_attention_mask", False):  # as diffusers does for encoders that want one
        mask = tokens.attention_mask.to(device)
    return text_encoder(ids.to(device), attention_mask=mask)[0]


def check_text_encoder(unet, text_encoder, where) -> None:
    """A LabError when the text encoder's width differs from the UNet's cross-attention width."""
    width, cross = int(text_encoder.config.hidden_size), unet.config.cross_attention_dim
    if cross != width:
        raise LabError(
            f"{where}: the text encoder gives {width}-wide embeddings but the UNet's cross-attention takes {cross}"
        )
