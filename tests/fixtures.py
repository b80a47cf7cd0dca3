"""Small image data sets the tests make themselves, in MNIST's IDX layout."""

from pathlib import Path

import numpy as np

from collapse.mnist import DATASETS, write_idx


def digit_like_images(n: int, seed: int, shape=(28, 28), n_classes: int = 10):
    """Class k is a bright bar at a class-specific place, jittered, on a dark noisy background."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    images = rng.integers(0, 30, size=(n, *shape)).astype(np.uint8)
    h, w = shape
    for i, k in enumerate(labels):
        top = 2 + (k % 5) * (h - 8) // 5 + rng.integers(0, 3)
        left = 3 + (k // 5) * (w // 2) + rng.integers(0, 3)
        images[i, top : top + 4, left : left + w // 3] = rng.integers(180, 256)
    return images, labels.astype(np.uint8)


def write_image_dataset(root: Path, dataset: str = "mnist", n_train: int = 1200, n_test: int = 1000) -> Path:
    """``root/<dataset>/`` with the four IDX files (gzip) under their published names."""
    folder = Path(root) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = digit_like_images(n, seed + (10 if dataset != "mnist" else 0))
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert set(p.name for p in folder.iterdir()) == set(DATASETS[dataset]["files"])
    return folder
