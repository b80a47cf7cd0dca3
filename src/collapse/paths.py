"""Where things live: the book's root, figures, cached results, data sets."""

from __future__ import annotations

import os
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
