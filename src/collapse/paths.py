"""Where things live: the book's root, figures, cached results, data sets."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path


def book_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``_config.yml`` and ``_toc.yml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file():
            return folder
    return here


def source_root() -> Path:
    """``COLLAPSE_SOURCE_DIR``, else :func:`book_root`: the book's sources (the pages of a build
    run in ``_build/stage``, and the build names the sources here)."""
    return Path(os.environ.get("COLLAPSE_SOURCE_DIR") or book_root())


def shown(path: Path) -> str:
    """``path`` as a page names it: relative to the book's sources when it lies in them
    (``chapters/recorded``, the same on every reader's machine), else as it is."""
    try:
        return Path(path).resolve().relative_to(source_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def figures_dir() -> Path:
    """``COLLAPSE_FIGURES_DIR``, else ``<book>/_build/figures``."""
    return Path(os.environ.get("COLLAPSE_FIGURES_DIR") or book_root() / "_build" / "figures")


def results_dir() -> Path:
    """``COLLAPSE_RESULTS_DIR``, else ``<book>/_build/results``."""
    return Path(os.environ.get("COLLAPSE_RESULTS_DIR") or book_root() / "_build" / "results")


def data_dir() -> Path:
    """``COLLAPSE_DATA_DIR``, else ``<book>/data``."""
    return Path(os.environ.get("COLLAPSE_DATA_DIR") or book_root() / "data")


def recorded_dir() -> Path:
    """``COLLAPSE_RECORDED_DIR``, else ``<book>/chapters/recorded``: committed summaries of runs
    too large for the book's own build (see ``python -m collapse.vae_experiment``)."""
    return Path(os.environ.get("COLLAPSE_RECORDED_DIR") or book_root() / "chapters" / "recorded")


# JAX's persistent compilation cache, for the book's pages and the tests (not for the library
# itself: a program imports it and decides). Most of a page's time at `ci` is compiling: the
# mixtures page took 116 s, then 59 s with its programs cached; the Gaussian page 39 s, then 31 s.
# A cached program is the one XLA would compile again: JAX keys it by the program, the XLA flags,
# the versions and the devices, and the numbers it gives were bit-identical to a fresh compile's
# for 1 and 2 threads in either order. JAX's threshold (programs that compiled in 1 s or more):
# caching every program (threshold 0) wrote 4,299 entries (194 MB) in CI's sequence, and with the
# threshold the first test pass and the book at `ci` wrote about 125 (59 MB); on 2 cores those two
# steps took 997 + 260 s with threshold 0, 940 + 288 s with JAX's, 950 + 366 s with no cache (one
# run each; the last book in a working tree, not the clone). No size bound: with one, JAX reads
# every entry's access time on every write, under a lock; the first test pass, writing 2,300
# entries from four processes, had run 78 % of its tests after 22 min, against all of them in
# 14.7 min with no cache. An entry that another process is still writing fails to decompress
# when read, and JAX then compiles afresh.


def compilation_cache_dir(root: Path | None = None) -> Path:
    """``<book>/_build/jax-cache/<machine>``: one folder per CPU kind (architecture and
    instruction-set flags), so that a ``_build`` copied to another machine is never served code
    compiled for this one."""
    cpu = platform.machine()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = platform.processor()
    tag = hashlib.sha256(f"{cpu} {flags}".encode()).hexdigest()[:12]
    return (root or book_root()) / "_build" / "jax-cache" / f"{cpu}-{tag}"


def compilation_cache_environment(root: Path | None = None) -> dict[str, str]:
    """The environment that turns JAX's persistent compilation cache on in processes started
    from here (before they import JAX). A variable already set wins: ``JAX_COMPILATION_CACHE_DIR``
    names another folder, and setting it empty turns the cache off."""
    return {"JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(compilation_cache_dir(root)))}
