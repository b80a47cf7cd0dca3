"""The build's products for readers: numbers with provenance, the figure gallery, re-run commands."""

import json

import pytest

from collapse import gallery, numbers

PROVENANCE = {"profile": "ci", "seed": 3, "commit": "0123456789abcdef", "version": "0.1.0", "device": "cpu: cpu x1",
              "date": "2026-11-25"}


@pytest.mark.parametrize("shown, value, ok", [
    ("0.12", 0.1234, True), ("0.13", 0.1234, False),  # :.2f
    ("10,000", 10_000, True), ("10,001", 10_000, False),  # :,
    ("1.23e-05", 1.2345e-5, True), ("1.3e-05", 1.2345e-5, False),  # :.3g in scientific form
    ("5241.9", 5241.93, True), ("5.24e+03", 5241.93, True),
    ("417", 417.3, True), ("418", 417.3, False),  # :.0f
    ("12.5%", 12.46, True), ("12.5%", 0.1246, True), ("12.5%", 0.13, False),
    ("10,000", "10,000", True), ("mnist", "fashion-mnist", False),  # glued text
    ("the authors\u2019 runs", "the authors' runs", True), ("the author\u2019s runs", "the authors' runs", False),
])
def test_a_shown_number_agrees_with_its_value_rounded(shown, value, ok):
    assert numbers.agrees(shown, value) is ok


def test_glued_values_are_read_from_an_executed_notebook():
    def output(name, text):  # as myst_nb.glue writes it (display=False)
        prefix = "application/papermill.record/"
        return {"output_type": "display_data", "metadata": {"scrapbook": {"name": name, "mime_prefix": prefix}},
                "data": {prefix + "text/plain": [text] if name == "b" else text}}

    notebook = {"cells": [{"cell_type": "code", "outputs": [output("a", "0.5"), output("b", "'10,000'"),
                                                             output("c", "np.float64(2.5)")]}]}
    assert numbers.glued_values(notebook) == {"a": 0.5, "b": "10,000", "c": 2.5}


def test_the_html_check_finds_a_number_that_is_not_in_the_json(tmp_path):
    (tmp_path / "chapters").mkdir()
    page = '<p>E is <span class="pasted-text">0.12</span> and <span class="pasted-text">9.99</span></p>'
    (tmp_path / "chapters" / "x.html").write_text(page)
    glued = {"chapters/x": {**PROVENANCE, "numbers": {"a": 0.1234, "b": 9.991}}}
    assert numbers.check_html(tmp_path, glued) == []
    glued["chapters/x"]["numbers"]["b"] = 9.5  # the page shows a number the JSON does not hold
    assert numbers.check_html(tmp_path, glued) == ["chapters/x: the page shows '9.99', which is none of its glued numbers"]


def figure_notebook(label):
    cell = {"cell_type": "code", "metadata": {"mystnb": {"figure": {"name": label, "caption": "A  caption\nover lines"}}},
            "outputs": []}
    return {"cells": [cell]}


def test_the_gallery_lists_every_exported_figure_with_downloads_and_a_citation(tmp_path):
    stage, figures = tmp_path / "stage", tmp_path / "figures"
    (stage / "chapters").mkdir(parents=True)
    (stage / "chapters" / "x.ipynb").write_text(json.dumps(figure_notebook("fig-x-one")))
    (figures / "x").mkdir(parents=True)
    for suffix in ("png", "pdf"):
        (figures / "x" / f"fig-x-one.{suffix}").write_bytes(b"figure")
    page = gallery.build_page(stage, figures, ["chapters/x"], PROVENANCE)
    assert "{numref}`fig-x-one`" in page and "A caption over lines" in page
    assert "{download}`PDF <figures/x/fig-x-one.pdf>`" in page and (stage / "figures" / "x" / "fig-x-one.pdf").is_file()
    assert "note   = {chapters/x, fig-x-one; profile ci, seed 3, commit 0123456789" in page


def test_a_figure_that_was_not_exported_fails_the_build(tmp_path):
    stage = tmp_path / "stage"
    (stage / "chapters").mkdir(parents=True)
    (stage / "chapters" / "x.ipynb").write_text(json.dumps(figure_notebook("fig-x-lost")))
    with pytest.raises(gallery.MissingFigure, match="fig-x-lost was not exported"):
        gallery.build_page(stage, tmp_path / "figures", ["chapters/x"], PROVENANCE)


def test_the_page_footer_gives_the_rerun_command_and_the_numbers(monkeypatch):
    monkeypatch.setattr(numbers, "_glued", {"worst_z": 2.345678912, "n_chains": 10_000})
    text = numbers.page_footer("chapters/gaussian", {"profile": ("ci", "`ci`, `cpu` or `paper`"),
                                                     "seed": (3, "an integer")}).data
    assert "papermill /tmp/gaussian.ipynb /tmp/gaussian-out.ipynb -p profile ci -p seed 3" in text
    assert "| `worst_z` | 2.34568 |" in text and "| `n_chains` | 10,000 |" in text
    assert "{download}`the MyST source <_myst/gaussian.md>`" in text


def test_make_pdf_names_the_missing_tex_before_executing_anything(monkeypatch, capsys):
    from collapse import book

    monkeypatch.setattr(book.shutil, "which", lambda name: None)  # no TeX on this PATH
    monkeypatch.setattr(book, "build", lambda *a, **k: pytest.fail("pages were executed without TeX"))
    assert book.missing_tex() == ["xelatex", "latexmk"]
    with pytest.raises(SystemExit) as stop:
        book.main(["--profile", "ci", "--pdf"])
    assert stop.value.code == 2
    said = capsys.readouterr().err
    assert "xelatex, latexmk cannot be found" in said and "apt-get install texlive-xetex" in said


def test_figures_get_their_caption_as_alt_text():
    from docutils import nodes

    from collapse import book

    doctree = nodes.document(None, None)
    figure = nodes.figure("", nodes.image(uri="a.png"), nodes.caption("", "Variance  goes\nto zero."))
    kept = nodes.figure("", nodes.image(uri="b.png", alt="written by hand"), nodes.caption("", "Other."))
    named = nodes.figure("", nodes.image(uri="_build/c/1f3a.png", alt="../_images/1f3a.png"), nodes.caption("", "Named."))
    doctree += [figure, kept, named]
    book._alt_text_from_captions(None, doctree, "chapters/gaussian")
    assert figure[0]["alt"] == "Variance goes to zero." and kept[0]["alt"] == "written by hand"
    assert named[0]["alt"] == "Named."  # myst-nb's file-name alt text is replaced


def test_the_intro_table_is_made_from_the_toc_and_each_chapters_front_matter(tmp_path):
    from pathlib import Path

    from collapse import book

    root = Path(__file__).resolve().parents[1]
    table = book.chapter_table(root)
    chapters = [p for p in book.toc_pages(root) if p.startswith("chapters/")]
    assert len(chapters) >= 6 and [line.split("`")[1] for line in table.splitlines()[2:]] == chapters
    intro = book.with_chapter_table((root / "intro.md").read_text(), root)
    assert book.CHAPTER_TABLE_MARKER not in intro and "{doc}`chapters/fairness` |" in intro
    # A chapter without its two lines fails the build, naming the file.
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/new\n")
    (tmp_path / "chapters" / "new.md").write_text("---\nkernelspec:\n  name: python3\nbook:\n  model: a model\n---\n# New\n")
    with pytest.raises(ValueError, match=r"new.md: its front matter needs book.shows"):
        book.chapter_table(tmp_path)
