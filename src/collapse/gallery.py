"""The "Figures" page: every labelled figure the build produced, with downloads and citations.

Built by the book driver after the pages are executed, from what they actually exported
(:func:`collapse.plotting.save_figure` writes ``<figures>/<chapter>/<label>.pdf|png``): a
thumbnail, the caption, a link to the figure in its chapter, its PDF and PNG, the profile,
seed, commit and date that made it, and a BibTeX entry and a plain line to cite it. A
labelled figure of an executed page with no exported files fails the build.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

BOOK_TITLE = "Model collapse: a reproducible book"
BOOK_AUTHORS = "The model-collapse book authors"


class MissingFigure(RuntimeError):
    """A labelled figure of an executed page was not exported."""


def labelled_figures(notebook: dict) -> list[tuple[str, str]]:
    """``(label, caption)`` of every figure cell of an executed notebook, in order."""
    out = []
    for cell in notebook.get("cells", []):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if "name" in figure:
            out.append((figure["name"], " ".join(str(figure.get("caption", "")).split())))
    return out


def citation(label: str, page: str, provenance: dict) -> tuple[str, str]:
    """BibTeX and a plain line citing one figure (or number) of the book, with its provenance."""
    year = provenance["date"][:4]
    made = f"profile {provenance['profile']}, seed {provenance['seed']}, commit {provenance['commit'][:10]}"
    bibtex = (f"@book{{collapsebook{year},\n  title  = {{{BOOK_TITLE}}},\n  author = {{{{{BOOK_AUTHORS}}}}},\n"
              f"  year   = {{{year}}},\n  note   = {{{page}, {label}; {made}, built {provenance['date']}}}\n}}")
    plain = f"{BOOK_AUTHORS} ({year}). {BOOK_TITLE}. {page}, {label} ({made}, built {provenance['date']})."
    return bibtex, plain


def build_page(stage: Path, figures_dir: Path, pages: list[str], provenance: dict) -> str:
    """Copy every exported figure of the executed ``pages`` into ``stage/figures`` and return the
    gallery page (MyST Markdown). Raises :class:`MissingFigure` for a figure that was not exported."""
    sections = []
    for page in pages:
        notebook = stage / f"{page}.ipynb"
        if not notebook.is_file():
            continue
        chapter = page.rsplit("/", 1)[-1]
        for label, caption in labelled_figures(json.loads(notebook.read_text(encoding="utf-8"))):
            found = [p for p in Path(figures_dir).glob(f"*/{label}.png") if p.with_suffix(".pdf").is_file()]
            if not found:
                raise MissingFigure(f"{page}: figure {label} was not exported to {figures_dir}/<chapter>/{label}.pdf|png "
                                    "(call collapse.plotting.save_figure in its cell)")
            target = stage / "figures" / chapter
            target.mkdir(parents=True, exist_ok=True)
            for suffix in (".png", ".pdf"):
                shutil.copy2(found[0].with_suffix(suffix), target / f"{label}{suffix}")
            bibtex, plain = citation(label, page, provenance)
            alt = caption.replace("`", "").replace("$", "").replace("{", "").replace("}", "")[:300]
            sections.append(
                f"## {label}\n\n"
                f"```{{image}} figures/{chapter}/{label}.png\n:width: 420px\n:alt: {alt}\n```\n\n"
                f"{{numref}}`{label}` in {{doc}}`/{page}`: {caption}\n\n"
                f"Download: {{download}}`PDF <figures/{chapter}/{label}.pdf>` · "
                f"{{download}}`PNG, 300 dpi <figures/{chapter}/{label}.png>`. Made with profile "
                f"`{provenance['profile']}`, seed `{provenance['seed']}`, commit `{provenance['commit'][:10]}`, on "
                f"{provenance['date']}.\n\n"
                f"````{{admonition}} Cite this figure\n:class: dropdown\n\n```bibtex\n{bibtex}\n```\n\n{plain}\n````\n"
            )
    intro = (
        "(figure-gallery)=\n# Figures\n\nEvery figure of this build of the book, as its chapter exported it: the "
        "thumbnail links nowhere, the figure number goes to its place in the chapter, and the PDF (vector) and PNG "
        "(300 dpi) are the files to reuse. Cite a figure with the entry under it, and the papers it reproduces "
        "with {doc}`/cite`.\n"
    )
    return intro + "\n" + "\n".join(sections)
