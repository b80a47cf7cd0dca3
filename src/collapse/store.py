"""The one results store: a folder per (experiment, key), keyed by a hash of what made it.

Layout under :func:`~collapse.paths.results_dir`::

    <experiment>/<key>/config.json        what produced it: experiment, version, key, code digest
    <experiment>/<key>/result.npz         cheap experiments: the whole result ...
    <experiment>/<key>/result.npz.sha256  ... and its checksum
    <experiment>/<key>/gen-0003/          neural experiments: one folder per finished generation
        params.npz  params.treedef  samples.npy  metrics.json  manifest.json (checksums)

What a result cannot do:

* **be served for other data or other code.** The key hashes the experiment, its version,
  its config (which callers extend with a digest of the data read: :func:`array_digest`,
  :func:`file_digest`) and :func:`code_digest`, a hash of the library modules that compute it.
* **be half-written.** Every file is written to a temporary name and renamed into place; a
  generation folder appears only once complete; leftovers of a killed writer are removed
  the next time the folder is opened.
* **be damaged and used.** Every stored file carries a SHA-256, checked on read. A file that
  fails is moved aside (``*.damaged-<time>``) with a warning naming it, and recomputed.
* **be written twice at once.** One writer per key: :func:`locked` takes an exclusive
  ``fcntl`` lock on the folder; a second process waits, then reuses what the first stored.
  (POSIX locks work on local disks; on a network filesystem they need a lock daemon, or
  put the results folder on a local disk.)

Files are written with the user's umask, so a shared results folder is readable by a group.

Across processes (:mod:`collapse.distributed`), every process computes and process 0 alone
writes (and locks); whether a stored result is used is process 0's answer, told to all
(:func:`~collapse.distributed.agree`), so the processes never part ways. The store must then
be on a filesystem every process sees.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .config import to_dict
from .distributed import agree, is_writer, load_shared
from .paths import results_dir


# Modules that format, plot, build or describe, and compute nothing that is stored.
PRESENTATION_MODULES = ("__init__.py", "avoiding.py", "book.py", "chapter.py", "checks.py", "paths.py", "plotting.py",
                        "records.py")

# The module that computes each experiment's stored results (experiment names as fnmatch patterns).
# An experiment's key hashes that module and every library module it imports, directly or through
# others, so that editing one chapter's code leaves the other chapters' stored results in use: a
# change to the LM chapter's verdicts no longer recomputes the 45 minutes of the whole book. An
# experiment named nowhere here is keyed by every computing module.
EXPERIMENT_MODULES = {
    "gaussian": "gaussian",
    "discrete*": "discrete",
    "mixtures-*": "mixtures",
    "lm*": "lm_experiment",
    "vae*": "vae_experiment",
    "classifier": "vae_experiment",  # the VAE chapter's judge of generated digits
    "fairness": "fairness",
    "linear-regression": "linear_regression",
    "real-fraction": "real_fraction",
}


def experiment_module(experiment: str) -> str | None:
    """The module of :data:`EXPERIMENT_MODULES` that computes ``experiment``, or None."""
    return next((module for pattern, module in EXPERIMENT_MODULES.items() if fnmatch.fnmatchcase(experiment, pattern)),
                None)


def imported_modules(folder: Path, module: str) -> set[str]:
    """``module`` and every module of the package in ``folder`` that it imports, directly or not
    (relative imports and ``collapse.…`` imports, at any depth of the source)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or not (folder / f"{name}.py").is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("collapse")):
                base = (node.module or "").removeprefix("collapse").lstrip(".")
                todo.extend([base.split(".")[0]] if base else [alias.name for alias in node.names])
            elif isinstance(node, ast.Import):
                todo.extend(a.name.split(".")[1] for a in node.names if a.name.startswith("collapse."))
    return seen


def source_digest(folder: Path, module: str | None = None) -> str:
    """A hash of the computing modules (all but :data:`PRESENTATION_MODULES`) of the package in
    ``folder``: those ``module`` imports, directly or not, or all of them when ``module`` is None."""
    names = (imported_modules(folder, module) if module else {p.stem for p in folder.glob("*.py")})
    digest = hashlib.sha256()
    for name in sorted(names):
        if f"{name}.py" not in PRESENTATION_MODULES:
            digest.update(f"{name}.py".encode() + b"\0" + (folder / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_digest(experiment: str | None = None) -> str:
    """The digest of the library code that computes ``experiment``'s stored numbers (see
    :data:`EXPERIMENT_MODULES`): results made by other code are other results."""
    return source_digest(Path(__file__).parent, experiment_module(experiment) if experiment else None)


def config_key(experiment: str, version: str, config: Any) -> str:
    """A short stable hash of what determines the numbers: experiment, version, config and code."""
    payload = json.dumps(
        {"experiment": experiment, "version": version, "config": to_dict(config), "code": code_digest(experiment)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class DamagedEntry(ValueError):
    """A stored file does not match its checksum (or cannot be read)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _share(path: Path) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the permissions of the user's umask."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


_held: set[str] = set()  # the folders this process holds the lock of (a nested call holds it already)


@contextlib.contextmanager
def locked(folder: Path):
    """Hold an exclusive lock on ``folder`` (created if need be): one writer per key. Re-entrant
    within a process; a second process waits, saying so, until the first releases it."""
    folder = Path(folder)
    name = str(folder.resolve())
    if name in _held or not is_writer():  # across processes, only process 0 writes, so only it locks
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[collapse] waiting for another run writing {folder} ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held.add(name)
        _clean_leftovers(folder)
        yield
    finally:
        _held.discard(name)
        os.close(fd)  # releases the lock


def _clean_leftovers(folder: Path) -> None:
    """Remove the scratch of writers that were killed (only ever called under the folder's lock)."""
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    for scratch in folder.glob(".gen-*"):
        shutil.rmtree(scratch, ignore_errors=True)


def set_aside(path: Path, why: str) -> Path:
    """Move a damaged file or folder out of the way (never delete evidence) and warn, naming it."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    if not is_writer():  # across processes, process 0 moves it and says so
        return target
    os.replace(path, target)
    warnings.warn(f"{path} was damaged ({why}); moved to {target.name} and computing it again", stacklevel=3)
    return target


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
    """``write`` a temporary file beside ``path``, then rename it into place (with the user's umask).
    Across processes, only process 0 writes."""
    if not is_writer():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        _share(Path(tmp))
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


def _load_npz(path: Path) -> dict:
    """``result.npz`` after checking it against ``result.npz.sha256``; :class:`DamagedEntry` if not."""
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.is_file():
        raise DamagedEntry("no checksum beside it: the writer was interrupted")
    if file_digest(path) != checksum.read_text().strip():
        raise DamagedEntry("its SHA-256 differs from the one written with it")
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise DamagedEntry(f"unreadable: {error}") from error


MANIFEST = "manifest.json"


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
        """``fill`` a scratch folder, add its checksums, then rename it into place in one step.
        If another writer put the same generation there first, theirs is kept (same inputs,
        same numbers) and ours is discarded. Across processes, only process 0 writes."""
        if not is_writer():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.path, prefix=f".gen-{n:04d}."))
        try:
            fill(scratch)
            (scratch / MANIFEST).unlink(missing_ok=True)  # adopted from another folder: written anew below
            sums = {p.name: file_digest(p) for p in sorted(scratch.iterdir())}
            _write_json(scratch / MANIFEST, sums)
            for p in scratch.iterdir():
                _share(p)
            _share(scratch)
            if not self._generation(n).exists():
                os.replace(scratch, self._generation(n))
        except OSError:
            if not self.has_generation(n):
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def verify_generation(self, n: int) -> None:
        """Check every file of generation ``n`` against its manifest; :class:`DamagedEntry` if any differs."""
        folder = self._generation(n)
        try:
            sums = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as error:
            raise DamagedEntry(f"{folder}: no readable {MANIFEST} ({error})") from error
        present = {p.name for p in folder.iterdir()} - {MANIFEST}
        if present != set(sums):
            raise DamagedEntry(f"{folder}: files {sorted(present ^ set(sums))} differ from its manifest")
        for name, expected in sums.items():
            if file_digest(folder / name) != expected:
                raise DamagedEntry(f"{folder / name}: its SHA-256 differs from the manifest's")

    def set_aside_generation(self, n: int, why: str) -> None:
        set_aside(self._generation(n), why)

    def remove_generation(self, n: int) -> None:
        """Delete generation ``n`` (a checkpoint a later one supersedes). Only process 0 deletes."""
        if is_writer():
            shutil.rmtree(self._generation(n), ignore_errors=True)

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
        """Generation ``n``'s samples, metrics and (optionally) parameters, checked against its manifest."""
        folder = self._generation(n)
        self.verify_generation(n)
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
            with locked(folder):
                _write_json(folder / "config.json", {"experiment": experiment, "version": version,
                                                     "config": to_dict(config), "code": code_digest(experiment)})
        return folder

    def run_dir(self, experiment: str, version: str, config: Any) -> RunDir:
        return RunDir(self.folder(experiment, version, config))

    def stored(self, experiment: str, version: str, config: Any) -> dict | None:
        """What :meth:`cached` stored for this config, or None (also when it is damaged: it is then
        set aside); computes nothing, creates nothing."""
        path = self.root / experiment / config_key(experiment, version, config) / "result.npz"
        if not path.exists():
            return None
        try:
            return _load_npz(path)
        except DamagedEntry as error:
            set_aside(path, str(error))
            return None

    def cached(self, experiment: str, version: str, config: Any, compute: Callable[[], dict]) -> dict:
        """``compute()`` (a dict of arrays) once per config; later calls, from any process, load it.

        Under the key's lock: a second process asking for the same key waits for the first and
        then loads its result. A damaged result is set aside and computed again.
        """
        folder = self.folder(experiment, version, config)
        path = folder / "result.npz"
        with locked(folder):
            result = None
            if path.exists():
                try:
                    result = _load_npz(path)
                except DamagedEntry as error:
                    set_aside(path, str(error))
            if agree(result is not None):
                return result if result is not None else load_shared(lambda: _load_npz(path), path)
            result = {k: np.asarray(v) for k, v in compute().items()}
            if is_writer():
                _write_npz(path, result)
                digest = file_digest(path)
                atomic_write(path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(digest + "\n"))
            return result
