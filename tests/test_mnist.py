"""The IDX loader: good files, bad files, checksums, downloads and the fallback."""

import gzip
import hashlib
import io

import numpy as np
import pytest

from collapse import mnist
from fixtures import write_image_dataset


def test_round_trip_of_a_written_dataset(tmp_path):
    write_image_dataset(tmp_path, "mnist", n_train=50, n_test=20)
    train = mnist.load("mnist", "train", root=tmp_path, allow_download=False)
    test = mnist.load("mnist", "test", root=tmp_path, allow_download=False)
    assert train.images.shape == (50, 28, 28) and train.images.dtype == np.uint8
    assert test.labels.shape == (20,) and test.labels.max() < 10
    assert not train.verified  # a fixture is not the published file, and the loader says so


def test_parse_idx_reads_header_and_bytes():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    np.testing.assert_array_equal(mnist.parse_idx(raw), array)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x01\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
        (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc", "not unsigned bytes"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "truncated"),
        (b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"abc", "longer than"),
        (b"\x00\x00\x08\x02" + (2).to_bytes(4, "big"), "header is truncated"),
        (b"", "bad magic"),
    ],
)
def test_malformed_idx_is_an_error_not_garbage(raw, message):
    with pytest.raises(mnist.IdxError, match=message):
        mnist.parse_idx(raw)


def test_truncated_gzip_file_names_the_file(tmp_path):
    folder = write_image_dataset(tmp_path, "mnist", n_train=50, n_test=20)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(mnist.IdxError, match="train-images"):
        mnist.load("mnist", "train", root=tmp_path, allow_download=False)


def test_images_and_labels_must_agree(tmp_path):
    folder = write_image_dataset(tmp_path, "mnist", n_train=50, n_test=20)
    mnist.write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(49, np.uint8))
    with pytest.raises(mnist.IdxError, match="50 images but 49 labels"):
        mnist.load("mnist", "train", root=tmp_path, allow_download=False)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(mnist.DataUnavailable, match="COLLAPSE_DATA_DIR"):
        mnist.load("fashion-mnist", "test", root=tmp_path, allow_download=False)


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        mnist.load("cifar", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        mnist.load("mnist", "valid", root=tmp_path)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


def test_download_keeps_only_files_with_the_published_md5(tmp_path, monkeypatch):
    payload = gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03")
    monkeypatch.setattr(mnist.urllib.request, "urlopen", lambda url, timeout: FakeResponse(payload))
    good = hashlib.md5(payload).hexdigest()
    mnist.download("https://example.org/x.gz", tmp_path / "x.gz", good)
    assert (tmp_path / "x.gz").read_bytes() == payload
    with pytest.raises(mnist.IdxError, match="md5"):
        mnist.download("https://example.org/y.gz", tmp_path / "y.gz", "0" * 32)
    assert not (tmp_path / "y.gz").exists() and not list(tmp_path.glob(".*"))  # no scratch file left


def test_load_downloads_from_a_mirror_when_the_folder_is_empty(tmp_path, monkeypatch):
    fixture = write_image_dataset(tmp_path / "source", "mnist", n_train=30, n_test=10)
    served = {name: (fixture / name).read_bytes() for name in mnist.DATASETS["mnist"]["files"]}
    monkeypatch.setattr(mnist.urllib.request, "urlopen", lambda url, timeout: FakeResponse(served[url.rsplit("/", 1)[1]]))
    monkeypatch.setitem(mnist.DATASETS["mnist"], "files", {k: hashlib.md5(v).hexdigest() for k, v in served.items()})
    images = mnist.load("mnist", "train", root=tmp_path / "target")
    assert images.verified and images.images.shape == (30, 28, 28)
    assert (tmp_path / "target" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_fallback_to_sklearn_digits_says_why(tmp_path):
    images, why = mnist.load_or_fallback("mnist", "train", root=tmp_path, allow_download=False)
    assert images.dataset == "sklearn-digits" and images.images.shape[1:] == (8, 8)
    assert images.images.max() == 255 and "COLLAPSE_DATA_DIR" in why
    test, _ = mnist.load_or_fallback("mnist", "test", root=tmp_path, allow_download=False)
    assert len(images.images) + len(test.images) == 1797
