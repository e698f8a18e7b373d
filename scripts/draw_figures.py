"""Draw the pictures the notebooks and the README show, offline, with the shipped shapes model.

- ``docs/pipeline.png``: files -> pixels -> vectors -> Milvus -> hits -> grid, also embedded as a cell
  attachment in ``notebooks/00_setup.ipynb`` (so that it shows on Colab, which does not load relative images);
- ``docs/result_grid.png``: the 5x2 grid of the top 10 for "a red circle", as 00 draws it.

Usage: python scripts/draw_figures.py [--grid]   (--grid: also redraw docs/result_grid.png)
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOK = ROOT / "notebooks" / "00_setup.ipynb"
ATTACHMENT = "pipeline.png"
STAGES = [("image files", "cat.jpg, dog.png"), ("pixels", "224×224×3"), ("vectors", "512 numbers"),
          ("Milvus", "a collection"), ("hits", "closest vectors"), ("grid", "5 × 2 pictures")]


def draw_pipeline(path: Path) -> Path:
    """The six stages as boxes joined by arrows, and the query joining at Milvus."""
    fig, ax = plt.subplots(figsize=(9, 1.9), dpi=80)
    ax.set_xlim(0, 12), ax.set_ylim(0, 3.2), ax.axis("off")
    for i, (name, detail) in enumerate(STAGES):
        x = 0.1 + 2 * i
        colour = "#dbe9f6" if name != "Milvus" else "#fde2c4"
        ax.add_patch(plt.Rectangle((x, 1.0), 1.6, 1.1, facecolor=colour, edgecolor="#345"))
        ax.text(x + 0.8, 1.72, name, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 0.8, 1.3, detail, ha="center", va="center", fontsize=7)
        if i:
            ax.annotate("", (x, 1.55), (x - 0.4, 1.55), arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.text(6.9, 2.95, '"a white dog" → vector', ha="center", va="center", fontsize=9, style="italic")
    ax.annotate("", (6.9, 2.1), (6.9, 2.75), arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.text(3.0, 0.55, "CLIP's image encoder", ha="center", fontsize=8, color="#555")
    ax.text(9.0, 0.55, "search: cosine similarity", ha="center", fontsize=8, color="#555")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return small(path)


def small(path: Path, colours: int = 64) -> Path:
    """Rewrite a PNG with a palette of ``colours``: a few times smaller, the same to the eye."""
    from PIL import Image

    with Image.open(path) as img:
        quantized = img.convert("RGB").quantize(colours)
    quantized.save(path, optimize=True)
    return path


def draw_result_grid(path: Path) -> Path:
    """The top 10 for "a red circle" in the shapes profile, drawn by ``viz.show_results``, 5 x 2."""
    from textimg_helpers.config import Settings
    from textimg_helpers.search import search_by_text
    from textimg_helpers.service.client import stop_services_under
    from textimg_helpers.session import Session
    from textimg_helpers.viz import show_results

    with tempfile.TemporaryDirectory() as tmp:
        session = Session.from_settings(Settings(profile="shapes", data_dir=Path(tmp)))
        session.index(progress=False, verbose=False)
        hits = search_by_text(session.connect(), session.collection_name, session.load_encoder(), "a red circle",
                              top_k=10)
        fig = show_results(hits, title='top 10 for "a red circle"', size=1.5)
        fig.savefig(path, dpi=60)
        plt.close(fig)
        small(path)
        session.connect().close()
        stop_services_under(tmp)
    return path


def embed(png: Path) -> bool:
    """Put ``png`` in 00's pipeline cell as its attachment; True when the notebook changed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if f"attachment:{ATTACHMENT}" in c.source)
    data = base64.b64encode(png.read_bytes()).decode()
    if cell.get("attachments", {}).get(ATTACHMENT, {}).get("image/png") == data:
        return False
    cell["attachments"] = {ATTACHMENT: {"image/png": data}}
    nbformat.write(nb, NOTEBOOK)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="also redraw docs/result_grid.png (indexes 480 images)")
    args = parser.parse_args(argv)
    DOCS.mkdir(exist_ok=True)
    pipeline = draw_pipeline(DOCS / "pipeline.png")
    print(f"wrote {pipeline.relative_to(ROOT)}; 00's attachment {'updated' if embed(pipeline) else 'unchanged'}")
    if args.grid:
        print(f"wrote {draw_result_grid(DOCS / 'result_grid.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
