import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from collapse.plotting import save_figure, use_style  # noqa: E402


def test_figures_are_exported_as_pdf_and_300_dpi_png(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_FIGURES_DIR", str(tmp_path))
    use_style()
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    save_figure(fig, "chapter", "fig-label")
    pdf, png = tmp_path / "chapter" / "fig-label.pdf", tmp_path / "chapter" / "fig-label.png"
    assert pdf.read_bytes().startswith(b"%PDF")
    from PIL import Image

    with Image.open(png) as image:
        assert abs(image.info["dpi"][0] - 300) < 1
