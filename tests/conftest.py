
import pytest

# Keep test runs from reading or polluting a reader's results cache.
@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COLLAPSE_FIGURES_DIR", str(tmp_path / "figures"))
    yield
