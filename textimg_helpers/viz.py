"""Pictures of results: a grid of thumbnails with label and score under each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from PIL import Image

from .data import load_image
from .hits import Hit


def thumbnail(filepath: str, size: int = 160) -> Image.Image:
    """A small RGB copy of an image (a grey square if it can no longer be read)."""
    try:
        img = load_image(filepath, max_side=size)
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
