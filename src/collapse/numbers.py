"""Numbers in the prose, with their provenance, and the page's re-run command.

Chapters glue every number they quote with :func:`glue` (``myst_nb.glue``, recorded), and
end with :func:`page_footer`, which renders two collapsed admonitions: the exact command
that re-executes the page with its parameters (and the values each parameter allows), and
"Numbers on this page". The book driver (:mod:`collapse.book`) collects every page's glued
values into ``_build/numbers.json`` with the profile, seeds, commit, library version, device
and date that made them, and checks that every glued value in the rendered HTML is there.
"""

from __future__ import annotations

import math
from typing import Any

_glued: dict[str, Any] = {}  # this kernel's glued values, in order
MYST_SOURCES = "_myst"  # beside each executed page, the book driver puts its MyST source here (a download)


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue``, recorded for the page's "Numbers on this page" table."""
    from myst_nb import glue as myst_glue

    _glued[name] = value
    myst_glue(name, value, display=display)


def formatted(value: Any) -> str:
    """A glued value as the table shows it: numbers to 6 significant digits, text as it is."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(value)
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def page_footer(page: str, parameters: dict[str, tuple[Any, str]]):
    """Markdown for the end of a chapter: how to re-run it, and every number it glued.

    ``parameters`` maps each parameter of the page's ``parameters`` cell to (the value this
    run used, the values it allows).
    """
    from IPython.display import Markdown

    name = page.rsplit("/", 1)[-1]
    flags = " ".join(f"-p {key} {value}" for key, (value, _) in parameters.items())
    rows = "\n".join(f"| `{key}` | `{value}` | {allowed} |" for key, (value, allowed) in parameters.items())
    rerun = (
        "````{admonition} Re-run this page\n:class: dropdown\n\n"
        "From the book's folder, after `make install` (or `make book` once):\n\n"
        f"```bash\n.venv/bin/jupytext --to ipynb {page}.md -o /tmp/{name}.ipynb\n"
        f".venv/bin/papermill /tmp/{name}.ipynb /tmp/{name}-out.ipynb {flags}\n```\n\n"
        f"| parameter | this page | allowed |\n|---|---|---|\n{rows}\n\n"
        f"Downloads: the executed notebook (the download button at the top of the page) and "
        f"{{download}}`the MyST source <{MYST_SOURCES}/{name}.md>`, the file these commands start from.\n````"
    )
    numbers = "\n".join(f"| `{key}` | {formatted(value)} |" for key, value in _glued.items())
    table = (
        "````{admonition} Numbers on this page\n:class: dropdown\n\n"
        "Every number the prose quotes, as computed when the page was executed (the build also writes them, "
        "with their provenance, to `_build/numbers.json`).\n\n"
        f"| name | value |\n|---|---|\n{numbers or '| (none) | |'}\n````"
    )
    return Markdown(rerun + "\n\n" + table)


# --------------------------------------------------------------------------- the build's side


def glued_values(notebook: dict) -> dict[str, Any]:
    """``{name: value}`` of every glued output of an executed notebook (values from their text form)."""
    import ast
    import re

    out = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if not name:
                continue
            prefix = output["metadata"]["scrapbook"].get("mime_prefix", "")
            text = output.get("data", {}).get(prefix + "text/plain", "")
            text = "".join(text) if isinstance(text, list) else text  # nbformat may store lines
            text = re.sub(r"^np\.\w+\((.*)\)$", r"\1", text.strip())  # np.float64(0.5) -> 0.5
            try:
                out[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[name] = text
    return out


def collect(stage, pages, provenance: dict) -> dict:
    """``{page: {provenance…, "numbers": {name: value}}}`` for the executed ``pages`` of a stage folder."""
    import json
    from pathlib import Path

    numbers = {}
    for page in pages:
        notebook = Path(stage) / f"{page}.ipynb"
        if notebook.is_file():
            values = glued_values(json.loads(notebook.read_text(encoding="utf-8")))
            numbers[page] = {**provenance, "numbers": values}
    return numbers


def _as_number(text: str) -> float | None:
    cleaned = text.strip().replace(",", "").replace("−", "-").rstrip("%").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def _decimals(text: str) -> int:
    cleaned = text.strip().replace(",", "").rstrip("%")
    mantissa = cleaned.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


_STRAIGHT_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def agrees(shown: str, value: Any) -> bool:
    """Whether a number as the page shows it (``:.2f``, ``:,``, ``:.3g``, a percentage) is ``value`` rounded."""
    if isinstance(value, str):  # the renderer curls quotes ("authors'" shows as "authors’")
        straight = lambda text: text.strip().translate(_STRAIGHT_QUOTES)  # noqa: E731
        return straight(shown) == straight(value)
    number = _as_number(shown)
    if number is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not math.isfinite(value):
        return shown.strip().lower() in (str(value).lower(), "inf", "nan", "-inf")
    exponent = int(shown.lower().split("e")[1]) if "e" in shown.lower() else 0  # scientific: 1.23e-05
    tolerance = 0.5 * 10 ** (exponent - _decimals(shown)) * (1 + 1e-9)
    if abs(number - value) <= tolerance:
        return True
    return shown.strip().endswith("%") and abs(number / 100 - value) <= tolerance / 100  # a ":.1%" of a fraction


def check_html(html_dir, numbers: dict) -> list[str]:
    """Every glued value shown in the rendered pages (``span.pasted-text``) against ``numbers``:
    the problems found (empty when each shown value is one of its page's numbers, rounded)."""
    import re
    from html import unescape
    from pathlib import Path

    problems = []
    for page, entry in numbers.items():
        if not entry["numbers"]:
            continue
        html = Path(html_dir) / f"{page}.html"
        if not html.is_file():
            problems.append(f"{page}: no rendered page {html}")
            continue
        shown = [unescape(re.sub(r"<[^>]+>", "", m)) for m in
                 re.findall(r'<span class="pasted-text">(.*?)</span>', html.read_text(encoding="utf-8"), re.S)]
        values = list(entry["numbers"].values())
        for text in shown:
            if not any(agrees(text, v) for v in values):
                problems.append(f"{page}: the page shows {text!r}, which is none of its glued numbers")
    return problems
