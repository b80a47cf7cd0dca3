import os
from pathlib import Path

import jax
import pytest

from collapse.paths import compilation_cache_environment

# The book's compilation cache, shared with `make book`: the tests compile the programs of every
# page at `ci` (test_chapters), and the book build that follows in CI loads them. In the
# environment for the pages' kernels and the tests' subprocesses, and in this process's JAX
# config (JAX read the environment when `collapse` imported it). A cached program gives the
# numbers of a fresh compile (collapse.paths), so no test passes or fails by it.
_cache = compilation_cache_environment(Path(__file__).resolve().parents[1])
os.environ.update(_cache)
jax.config.update("jax_compilation_cache_dir", _cache["JAX_COMPILATION_CACHE_DIR"] or None)


# Keep test runs from reading or polluting a reader's results cache.
@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COLLAPSE_FIGURES_DIR", str(tmp_path / "figures"))
    yield
