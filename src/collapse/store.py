"""The one results store: a folder per (experiment, config), keyed by a hash of the config.

Layout under :func:`~collapse.paths.results_dir`::

    <experiment>/<key>/config.json        the config that produced it, and the code version
    <experiment>/<key>/result.npz         cheap experiments: the whole result
    <experiment>/<key>/gen-0003/          neural experiments: one folder per finished generation
        params.npz  params.treedef  samples.npy  metrics.json

Every file is written to a temporary name and renamed into place, and a generation
folder appears only once complete, so an interrupted run never leaves a half-written
result that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .config import to_dict
from .paths import results_dir


def config_key(experiment: str, version: str, config: Any) -> str:
    """A short stable hash of what determines the numbers: experiment, its version and config."""
    payload = json.dumps({"experiment": experiment, "version": version, "config": to_dict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``md5``, ``sha256``, ...), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """A short hash of arrays' contents, dtypes and shapes: keys a stored result to the data it read."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_npz(path: Path, arrays: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True)))


def save_pytree(folder: Path, name: str, tree: Any) -> None:
    """Leaves to ``name.npz`` (named by their tree path), structure to ``name.treedef``."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays = {f"{i:05d}{jax.tree_util.keystr(p)}": np.asarray(x) for i, (p, x) in enumerate(leaves_with_paths)}
    _write_npz(folder / f"{name}.npz", arrays)
    atomic_write(folder / f"{name}.treedef", lambda tmp: tmp.write_bytes(pickle.dumps(treedef)))


def load_pytree(folder: Path, name: str) -> Any:
    treedef = pickle.loads((folder / f"{name}.treedef").read_bytes())
    with np.load(folder / f"{name}.npz") as f:
        leaves = [f[k] for k in sorted(f.files)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


class RunDir:
    """The folder of one run; one sub-folder per finished generation."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _generation(self, n: int) -> Path:
        return self.path / f"gen-{n:04d}"

    def has_generation(self, n: int) -> bool:
        return self._generation(n).is_dir()

    def finished_generations(self) -> list[int]:
        return sorted(int(p.name[4:]) for p in self.path.glob("gen-[0-9][0-9][0-9][0-9]") if p.is_dir())

    def _write_generation(self, n: int, fill: Callable[[Path], None]) -> None:
        """``fill`` a scratch folder, then rename it into place in one step."""
        self.path.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.path, prefix=f".gen-{n:04d}."))
        try:
            fill(scratch)
            os.replace(scratch, self._generation(n))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def save_generation(self, n: int, *, params: Any, samples: np.ndarray, metrics: dict) -> None:
        def fill(scratch: Path) -> None:
            save_pytree(scratch, "params", params)
            np.save(scratch / "samples.npy", np.asarray(samples))
            _write_json(scratch / "metrics.json", metrics)

        self._write_generation(n, fill)

    def adopt_generation(self, n: int, source: "RunDir") -> None:
        """Copy ``source``'s finished generation ``n`` here."""
        self._write_generation(n, lambda scratch: shutil.copytree(source._generation(n), scratch, dirs_exist_ok=True))

    def load_generation(self, n: int, *, params: bool = True) -> dict:
        folder = self._generation(n)
        record = {
            "samples": np.load(folder / "samples.npy"),
            "metrics": json.loads((folder / "metrics.json").read_text()),
        }
        if params:
            record["params"] = load_pytree(folder, "params")
        return record


class ResultsStore:
    """Results keyed by config: a re-run with the same config reuses what is there."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else results_dir()

    def folder(self, experiment: str, version: str, config: Any) -> Path:
        folder = self.root / experiment / config_key(experiment, version, config)
        if not (folder / "config.json").exists():
            _write_json(
                folder / "config.json", {"experiment": experiment, "version": version, "config": to_dict(config)}
            )
        return folder

    def run_dir(self, experiment: str, version: str, config: Any) -> RunDir:
        return RunDir(self.folder(experiment, version, config))

    def stored(self, experiment: str, version: str, config: Any) -> dict | None:
        """What :meth:`cached` stored for this config, or None; computes nothing, creates nothing."""
        path = self.root / experiment / config_key(experiment, version, config) / "result.npz"
        if not path.exists():
            return None
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def cached(self, experiment: str, version: str, config: Any, compute: Callable[[], dict]) -> dict:
        """``compute()`` (a dict of arrays) once per config; later calls load it from disk."""
        path = self.folder(experiment, version, config) / "result.npz"
        if path.exists():
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        result = {k: np.asarray(v) for k, v in compute().items()}
        _write_npz(path, result)
        return result
