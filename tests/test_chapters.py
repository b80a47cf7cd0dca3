"""Every notebook page of the book, executed through papermill at profile=ci."""

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from collapse.book import is_notebook, page_environment, toc_pages

from fixtures import write_brown, write_image_dataset, write_wikitext

ROOT = Path(__file__).resolve().parents[1]
PAGES = [p for p in toc_pages(ROOT) if is_notebook(ROOT / f"{p}.md")]


def test_every_chapter_is_in_the_toc():
    chapters = {f"chapters/{p.stem}" for p in (ROOT / "chapters").glob("*.md")}
    assert chapters and chapters <= set(PAGES)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_executes_at_profile_ci(page, tmp_path, monkeypatch):
    # Small image data sets made here, so the test needs neither the real files nor a network.
    for dataset in ("mnist", "fashion-mnist"):
        write_image_dataset(tmp_path / "data", dataset)
    write_wikitext(tmp_path / "data")
    write_brown(tmp_path / "data")
    monkeypatch.setenv("COLLAPSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "no-nltk-data"))
    source = ROOT / f"{page}.md"
    notebook = jupytext.read(source)
    parameter_cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameter_cells) == 1, "exactly one cell tagged 'parameters'"
    assert "profile" in parameter_cells[0].source and "seed" in parameter_cells[0].source
    raw = tmp_path / "input.ipynb"
    nbformat.write(notebook, raw)
    # Seed 3, not 0: the book's own build runs seed 0, and a page that ignores its seed (or reads
    # another chapter's results under seed 0) shows here.
    papermill.execute_notebook(
        str(raw), str(tmp_path / "output.ipynb"), parameters={"profile": "ci", "seed": 3},
        cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
    )


def test_staged_pages_find_the_data_and_records_of_the_sources(monkeypatch, tmp_path):
    # The pages run in _build/stage: the default data/ folder is the book's, not the stage's.
    monkeypatch.delenv("COLLAPSE_DATA_DIR", raising=False)
    env = page_environment(tmp_path)
    assert env["COLLAPSE_DATA_DIR"] == str(tmp_path / "data")
    assert env["COLLAPSE_RECORDED_DIR"] == str(tmp_path / "chapters" / "recorded")
    assert env["COLLAPSE_SOURCE_DIR"] == str(tmp_path)
    monkeypatch.setenv("COLLAPSE_DATA_DIR", "/elsewhere")
    assert page_environment(tmp_path)["COLLAPSE_DATA_DIR"] == "/elsewhere"


def test_pages_share_the_books_compilation_cache_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    folder = Path(page_environment(tmp_path)["JAX_COMPILATION_CACHE_DIR"])
    assert folder.parent == tmp_path / "_build" / "jax-cache"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")  # a reader turned it off
    assert page_environment(tmp_path)["JAX_COMPILATION_CACHE_DIR"] == ""
