"""MNIST and Fashion-MNIST in their original IDX format, with checksums and a fallback.

Where the files come from, in order:

1. ``<data_dir>/<dataset>/<file>.gz`` (``COLLAPSE_DATA_DIR``, default ``<book>/data``),
   or the same name without ``.gz``;
2. a download from the data set's public mirrors into that folder, accepted only if its
   md5 is the published one;
3. otherwise a :class:`DataUnavailable` error that says where to put the files.

Local files are parsed strictly (magic number, dimensions, exact length), so a corrupt
or truncated file raises :class:`IdxError` instead of returning garbage; their md5 is
compared with the published one and reported in :attr:`Images.verified`, so a page can
say when it did not run on the published files. :func:`load_or_fallback` falls back to
scikit-learn's 8×8 digits when no MNIST can be had.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from .paths import data_dir
from .store import atomic_write, file_digest

# The published md5 of every file, and mirrors that serve them under these names.
DATASETS = {
    "mnist": {
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "classes": tuple(str(d) for d in range(10)),
    },
    "fashion-mnist": {
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "classes": ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    },
}
SPLITS = {"train": "train", "test": "t10k"}
IDX_TYPES = {0x08: np.uint8}  # the only element type MNIST-family files use


class IdxError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes."""


class DataUnavailable(FileNotFoundError):
    """No copy of a data set could be found or downloaded."""


@dataclasses.dataclass(frozen=True)
class Images:
    """One split of an image data set."""

    images: np.ndarray  # N × H × W, uint8
    labels: np.ndarray  # N, int
    dataset: str  # "mnist", "fashion-mnist" or "sklearn-digits"
    classes: tuple  # the name of each label
    verified: bool  # every file matched its published checksum


def parse_idx(raw: bytes, *, name: str = "IDX data") -> np.ndarray:
    """The array in an (uncompressed) IDX file: magic 0x0000 08 D, D big-endian sizes, the bytes."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxError(f"{name}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, n_dims = raw[2], raw[3]
    if dtype not in IDX_TYPES:
        raise IdxError(f"{name}: element type 0x{dtype:02x} is not unsigned bytes (0x08)")
    if n_dims == 0 or len(raw) < 4 + 4 * n_dims:
        raise IdxError(f"{name}: header is truncated or declares no dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    expected = 4 + 4 * n_dims + int(np.prod(shape))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise IdxError(f"{name}: {what}: {len(raw):,} bytes for shape {shape} (expected {expected:,})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if the name ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise IdxError(f"{path}: cannot be decompressed ({error}); delete it and fetch it again") from error


def download(url: str, target: Path, md5: str) -> None:
    """Fetch ``url`` to ``target``, keeping it only if its md5 matches."""

    def fetch(tmp: Path) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        got = file_digest(tmp, "md5")
        if got != md5:
            raise IdxError(f"{url}: md5 {got} is not the published {md5}; the download was discarded")

    atomic_write(target, fetch)


def _locate(dataset: str, filename: str, folder: Path, allow_download: bool) -> tuple[Path, bool]:
    """The file's path and whether its md5 is the published one."""
    md5 = DATASETS[dataset]["files"][filename]
    for candidate in (folder / filename, folder / filename[: -len(".gz")]):
        if candidate.is_file():
            return candidate, candidate.suffix == ".gz" and file_digest(candidate, "md5") == md5
    errors = []
    if allow_download:
        for mirror in DATASETS[dataset]["mirrors"]:
            try:
                download(mirror + filename, folder / filename, md5)
                return folder / filename, True
            except (OSError, IdxError) as error:  # URLError is an OSError
                errors.append(f"{mirror}: {error}")
    raise DataUnavailable(
        f"{dataset}: {filename} is not in {folder} and could not be downloaded"
        + (f" ({'; '.join(errors)})" if errors else " (downloads disabled)")
        + f". Put the four original IDX files of {dataset} there, or point COLLAPSE_DATA_DIR at a folder holding"
        f" '{dataset}/'. Published md5 of this file: {md5}."
    )


def load(dataset: str = "mnist", split: str = "train", *, root: Path | None = None, allow_download: bool = True) -> Images:
    """One split of MNIST or Fashion-MNIST as ``uint8`` images and integer labels."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not allowed; choose one of {tuple(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of {tuple(SPLITS)}")
    folder = Path(root if root is not None else data_dir()) / dataset
    prefix = SPLITS[split]
    arrays, verified = [], True
    for kind, n_dims in (("images-idx3", 3), ("labels-idx1", 1)):
        path, ok = _locate(dataset, f"{prefix}-{kind}-ubyte.gz", folder, allow_download)
        array = parse_idx(_read(path), name=str(path))
        if array.ndim != n_dims:
            raise IdxError(f"{path}: has {array.ndim} dimensions, expected {n_dims}")
        arrays.append(array)
        verified &= ok
    images, labels = arrays
    if len(images) != len(labels):
        raise IdxError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return Images(images, labels.astype(np.int32), dataset, DATASETS[dataset]["classes"], verified)


def sklearn_digits(split: str = "train", test_fraction: float = 0.2) -> Images:
    """scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels) scaled to 0–255, split deterministically."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    n_test = int(round(test_fraction * len(images)))
    part = slice(n_test, None) if split == "train" else slice(0, n_test)
    return Images(images[part], digits.target[part].astype(np.int32), "sklearn-digits", DATASETS["mnist"]["classes"], True)


def load_or_fallback(dataset: str = "mnist", split: str = "train", **kwargs) -> tuple[Images, str | None]:
    """``load(...)``, or scikit-learn's digits with the reason when no copy of the data set can be had."""
    try:
        return load(dataset, split, **kwargs), None
    except DataUnavailable as error:
        return sklearn_digits(split), str(error)


# --------------------------------------------------------------------------- what a chapter reads


@dataclasses.dataclass(frozen=True)
class ChapterData:
    train: Images  # the whole real training split (the classifier learns from all of it)
    test: Images  # the first n_test real test images
    notice: str | None  # what a reader must know about where the data came from, if anything


def load_data(dataset: str, n_test: int, **kwargs) -> ChapterData:
    """Real data for the chapter, scikit-learn's digits if none can be had, and a notice saying which."""
    train, why = load_or_fallback(dataset, "train", **kwargs)
    test, why_test = load_or_fallback(dataset, "test", **kwargs)
    if (why is None) != (why_test is None):  # one split real, the other scikit-learn's: not one data set
        missing, reason = ("train", why) if why is not None else ("test", why_test)
        raise DataUnavailable(f"{dataset}: the {missing} split could not be had while the other was found, so the two "
                              f"would come from different data sets. {reason}")
    test = Images(test.images[:n_test], test.labels[:n_test], test.dataset, test.classes, test.verified)
    notice = None
    if why is not None:
        notice = (
            f"No copy of {dataset} could be found or downloaded, so this page ran on scikit-learn's "
            f"{len(train.images) + len(test.images):,} handwritten digits (8×8 pixels) instead. Its numbers are "
            f"**not comparable** to the paper's. ({why})"
        )
    elif not (train.verified and test.verified):
        notice = (
            f"The {dataset} files this page read do not match the published checksums (they may be a test "
            "fixture or a modified copy): its numbers are not comparable to the paper's."
        )
    return ChapterData(train, test, notice)
