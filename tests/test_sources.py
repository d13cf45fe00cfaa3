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
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1], b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251,
             b"filenames": [b"a.png", b"b.png"]}
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    raw = load_source("cifar10", str(folder))
    assert raw.images[0].shape == (32, 32, 3) and raw.images[0][0, 0, 0] == 0 and raw.images[0][0, 1, 0] == 1
