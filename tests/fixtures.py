"""Small image data sets the tests make themselves, in MNIST's IDX layout."""

import os
import socket
import subprocess
import sys
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


# --------------------------------------------------------------------------- text

_SUBJECTS = ["the river", "a small town", "the old army", "her brother", "the museum", "this song", "the storm", "a young king"]
_VERBS = ["crossed", "described", "built", "remembered", "followed", "defended", "opened", "carried"]
_OBJECTS = ["the northern bridge", "a long letter", "the first album", "three ships", "the city walls", "an old map"]
_TAILS = ["in 1862", "after the war", "during the winter", "with great care", "before dawn", "near the coast"]


def sentences(n: int, seed: int) -> list[str]:
    """``n`` simple English sentences from a fixed grammar (varied enough to train a tokenizer on)."""
    rng = np.random.default_rng(seed)
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return [f"{pick(_SUBJECTS).capitalize()} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)} ." for _ in range(n)]


def write_wikitext(root: Path, release: str = "tokenized", n_lines=(600, 80, 80)) -> Path:
    """``root/wikitext-2[-raw]/`` with train/valid/test files of the release's names."""
    folder = Path(root) / ("wikitext-2-raw" if release == "raw" else "wikitext-2")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = "wiki.{}.raw" if release == "raw" else "{}.txt"
    for seed, (split, n) in enumerate(zip(("train", "valid", "test"), n_lines)):
        lines = [" = Heading = "] + [" " + " ".join(sentences(4, 100 * seed + i)) for i in range(n)]
        (folder / pattern.format(split)).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_brown(root: Path, genres=("news", "fiction"), files_per_genre: int = 12) -> Path:
    """``root/brown/`` in NLTK's layout: tagged files and cats.txt."""
    folder = Path(root) / "brown"
    folder.mkdir(parents=True, exist_ok=True)
    cats = []
    for g, genre in enumerate(genres):
        for i in range(files_per_genre):
            name = f"c{'ab'[g]}{i + 1:02d}"
            tagged = ["\t" + " ".join(f"{w}/tag" for w in s.split()) for s in sentences(30, 1000 * g + i)]
            (folder / name).write_text("\n\n".join(tagged) + "\n", encoding="utf-8")
            cats.append(f"{name} {genre}")
    (folder / "cats.txt").write_text("\n".join(cats) + "\n")
    return folder


# --------------------------------------------------------------------------- interruptions


def interrupt_call(monkeypatch, module, name: str, at: int, note=lambda args, kwargs: None) -> list:
    """Make ``module.name`` raise ``KeyboardInterrupt`` on its ``at``-th call (1-based), as a user's
    Ctrl-C would; every call first appends ``note(args, kwargs)`` to the returned list."""
    calls, real = [], getattr(module, name)

    def interrupted(*args, **kwargs):
        calls.append(note(args, kwargs))
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)
    return calls


# --------------------------------------------------------------------------- devices


def run_on_devices(script: str, n_devices: int, path: Path):
    """Run ``script`` (which saves an npz to ``sys.argv[1]``) in a fresh process with ``n_devices``
    forced CPU devices; return the loaded npz. Other XLA flags of this process (the suite's
    second pass under another CPU configuration) carry over."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    flags.append(f"--xla_force_host_platform_device_count={n_devices}")
    env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
    return np.load(path)


def run_on_processes(script: str, n_processes: int, devices_per_process: int, path: Path, timeout: float = 600):
    """Run ``script`` as ``n_processes`` processes joined by ``jax.distributed`` on localhost
    (:mod:`collapse.distributed` reads the environment set here), each with
    ``devices_per_process`` forced CPU devices. Process 0 saves an npz to ``sys.argv[1]``;
    return it loaded. A process that fails or hangs fails the call."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    procs = []
    for i in range(n_processes):
        env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES=str(n_processes), JAX_PROCESS_ID=str(i))
        out = path.with_suffix(f".{i}.npz") if i else path
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(out)], env=env))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0] * n_processes, f"exit codes {codes}"
    return np.load(path)
