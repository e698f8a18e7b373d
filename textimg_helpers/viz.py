"""Pictures: images and results as grids of thumbnails, and measures as bar charts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from PIL import Image

from .data import load_image
from .hits import Hit

__all__ = ["plot_measures", "show_embedding_map", "show_images", "show_queries", "show_relevance",
           "show_results", "show_similarity", "thumbnail"]


def thumbnail(filepath: str, size: int = 160) -> Image.Image:
    """A small RGB copy of an image (a grey square if it can no longer be read)."""
    try:
        img = load_image(filepath, max_side=size, min_side=size)  # a HEIC: its thumbnail
    except Exception:
        return Image.new("RGB", (size, size), (200, 200, 200))
    img.thumbnail((size, size))
    return img


def show_results(hits: Sequence[Hit], title: str | None = None, ncols: int = 5,
                 save_to: str | os.PathLike | None = None, size: float = 2.2):
    """Plot hits as a grid (label and score under each thumbnail); optionally save a PNG."""
    nrows = max(1, -(-len(hits) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.7)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, hit in zip(axes.flat, hits):
        ax.axis("on")
        ax.set_xticks([]), ax.set_yticks([])
        ax.spines[:].set_visible(False)
        ax.imshow(thumbnail(hit.filepath))
        ax.set_xlabel(f"{hit.label}\n{hit.score:.3f}", fontsize=9)  # under the thumbnail
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=80)
    return fig


def show_queries(results: dict[str, Sequence[Hit]], top_k: int = 5, size: float = 2.0):
    """Several queries side by side: one row per query, its ``top_k`` hits across."""
    fig, axes = plt.subplots(len(results), top_k, figsize=(top_k * size, len(results) * (size + 0.4)),
                             squeeze=False)
    for row, (query, hits) in zip(axes, results.items()):
        row[0].set_ylabel(query)
        for ax, hit in zip(row, list(hits)[:top_k]):
            ax.imshow(thumbnail(hit.filepath))
            ax.set_title(f"{hit.label} {hit.score:.2f}", fontsize=8)
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def show_images(image_paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
                ncols: int = 8, size: float = 1.6):
    """Thumbnails of image files in a grid, each titled with its label (if given); returns the figure."""
    import matplotlib.pyplot as plt

    labels = list(labels) if labels is not None else [""] * len(image_paths)
    nrows = max(1, -(-len(image_paths) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.3)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path, label in zip(axes.flat, image_paths, labels):
        ax.imshow(thumbnail(str(path)))
        ax.set_title(label, fontsize=8)
    fig.tight_layout()
    return fig


RELEVANT, NOT_RELEVANT = "tab:green", "tab:red"


def show_relevance(hits: Sequence[Hit], label: str | None = None, title: str | None = None, ncols: int = 5,
                   relevant: Sequence[bool] | None = None):
    """``show_results`` with each hit framed green when it is relevant (its label is ``label``, or as
    ``relevant`` says, one flag per hit), red when it is not, and the precision so far (relevant hits
    / rank) under it: the arithmetic of AP@k."""
    relevant = [hit.label == label for hit in hits] if relevant is None else list(relevant)
    fig = show_results(hits, title=title, ncols=ncols)
    found = 0
    for rank, (ax, hit, is_relevant) in enumerate(zip(fig.axes, hits, relevant), start=1):
        found += is_relevant
        colour = RELEVANT if is_relevant else NOT_RELEVANT
        ax.spines[:].set_visible(True)
        ax.spines[:].set_color(colour)
        ax.spines[:].set_linewidth(4)
        ax.set_xlabel(f"{hit.label}\n#{rank}: precision {found}/{rank}", fontsize=9, color=colour)
    fig.tight_layout()
    return fig


def measure(report, name: str) -> float:
    """``recall@k`` or ``mAP@10`` of an evaluation report (anything with ``recall(k)`` and ``map10``)."""
    return report.map10 if name == "mAP@10" else report.recall(int(name.removeprefix("recall@")))


def plot_measures(reports: Mapping[str, object], measures: Sequence[str] = ("recall@1", "mAP@10"),
                  title: str | None = None, width: float = 7.0):
    """Grouped bars: one group per report (a template, a language...), one bar per measure, each
    bar labelled with its value; returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    x, bar_width = np.arange(len(reports)), 0.8 / len(measures)
    upright = len(measures) > 2  # narrow bars: their values written upwards, so that they do not overlap
    fig, ax = plt.subplots(figsize=(width, 3))
    for i, name in enumerate(measures):
        offset = (i - (len(measures) - 1) / 2) * bar_width
        bars = ax.bar(x + offset, [measure(r, name) for r in reports.values()], width=bar_width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90 if upright else 0, padding=2)
    ax.set_xticks(x, list(reports))
    ax.set_ylim(0, 1.3 if upright else 1.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)  # beside the bars, never on them
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def show_similarity(similarity, row_labels: Sequence[str], col_labels: Sequence[str],
                    title: str = "image × caption", figsize: tuple[float, float] = (6, 4.5)):
    """A similarity matrix (rows x columns, e.g. images x captions) as a heatmap, each cell printed
    with its value; returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    similarity = np.asarray(similarity)
    fig, ax = plt.subplots(figsize=figsize)
    cells = ax.imshow(similarity, cmap="viridis")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    for (row, col), value in np.ndenumerate(similarity):
        bright = cells.norm(value) > 0.6  # dark text on the light (yellow) end of the colour map
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="black" if bright else "white")
    fig.colorbar(cells, label="cosine similarity")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def project_2d(vectors) -> "np.ndarray":
    """The first two principal components of ``vectors`` (n, dim): PCA with numpy's SVD, shape (n, 2)."""
    import numpy as np

    centred = np.asarray(vectors, dtype=np.float64) - np.mean(vectors, axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def show_embedding_map(image_embs, image_labels: Sequence[str], text_embs, captions: Sequence[str],
                       title: str = "images (dots) and captions (stars) in one plane"):
    """Images and captions in one 2-D plane (PCA of all their vectors together): a dot per image,
    coloured by its label, a star per caption; returns the figure."""
    import numpy as np

    points = project_2d(np.concatenate([image_embs, text_embs]))
    images, texts = points[: len(image_embs)], points[len(image_embs):]
    labels = sorted(set(image_labels))
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(7, 5))
    for label in labels:
        mine = np.array([lab == label for lab in image_labels])
        ax.scatter(*images[mine].T, s=18, color=colours[label], label=label, alpha=0.7)
    ax.scatter(*texts.T, marker="*", s=260, color="black")
    for (x, y), caption in zip(texts, captions):
        ax.annotate(caption, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
