"""One plotting style for the whole book, and figures saved where readers can cite them."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
from cycler import cycler

from .paths import figures_dir

# Colour-blind-safe (Okabe & Ito), in the order series are usually added.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 110,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.prop_cycle": cycler(color=PALETTE),
    "lines.linewidth": 1.6,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable in the PDF
}


def use_style() -> None:
    """The book's style; in a notebook, figures are also kept as PDF (vector) for ``make pdf``.

    The HTML shows each figure's PNG; the LaTeX builder prefers the PDF of the same output.
    """
    mpl.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("png", "pdf")


def save_figure(fig: plt.Figure, chapter: str, label: str) -> None:
    """Write ``<figures>/<chapter>/<label>.pdf`` and ``.png`` (300 dpi), the label being the book's figure name."""
    folder = figures_dir() / chapter
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        fig.savefig(folder / f"{label}.{ext}", metadata={"CreationDate": None} if ext == "pdf" else None)


def band(ax, x, lower, upper, **kwargs):
    """A shaded band (Monte Carlo interval, quantile range) in the current series' colour."""
    kwargs.setdefault("alpha", 0.2)
    kwargs.setdefault("linewidth", 0)
    return ax.fill_between(x, lower, upper, **kwargs)


def mean_with_band(ax, x, values, color, linestyle="-", label=None):
    """Mean over the leading (chains) axis, with a band of +-2 Monte Carlo standard errors."""
    mean = values.mean(0)
    se = values.std(0) / (values.shape[0] ** 0.5)
    ax.plot(x, mean, linestyle, color=color, label=label)
    band(ax, x, mean - 2 * se, mean + 2 * se, color=color)
