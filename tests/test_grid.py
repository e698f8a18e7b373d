"""The result grid shows what its labels say: each thumbnail is the image of the hit whose label and score
are written under it (checked on the rendered pixels, by the colour of each shape)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from conftest import SHAPES_COLLECTION, shape_colour
from textimg_helpers.search import search_by_text
from textimg_helpers.milvus import connect
from textimg_helpers.viz import show_results

QUERIES = ["a red circle", "a green square", "a blue triangle", "a yellow star", "an orange cross",
           "a purple circle", "a white square", "a black star"]  # one hit each: eight colours in one grid


@pytest.fixture(scope="module")
def hits(indexed, shapes_encoder):
    client = connect(indexed.uri)
    found = [search_by_text(client, SHAPES_COLLECTION, shapes_encoder, query, top_k=1)[0] for query in QUERIES]
    client.close()
    return found


def rendered_cells(fig) -> list[tuple[Image.Image, str, tuple]]:
    """For each grid cell with a picture: its pixels as drawn, the text under it, and where both are."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    canvas = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    height = canvas.shape[0]
    cells = []
    for ax in fig.axes:
        if not ax.images:
            continue
        box = ax.get_window_extent()
        x0, x1, top, bottom = int(box.x0) + 3, int(box.x1) - 3, height - int(box.y1) + 3, height - int(box.y0) - 3
        text = ax.xaxis.label
        cells.append((Image.fromarray(canvas[top:bottom, x0:x1]), text.get_text(),
                      (box, text.get_window_extent())))
    plt.close(fig)
    return cells


def test_each_thumbnail_shows_the_colour_its_label_names(hits):
    assert len({hit.label for hit in hits}) == 8, [hit.label for hit in hits]  # eight different hits
    cells = rendered_cells(show_results(hits, ncols=4))
    assert len(cells) == 8
    assert [shape_colour(picture) for picture, _, _ in cells] == [text.split("_")[0] for _, text, _ in cells]
    assert [text for _, text, _ in cells] == [f"{hit.label}\n{hit.score:.3f}" for hit in hits]  # in order


def test_each_label_is_under_its_own_thumbnail(hits):
    for _, text, (box, text_box) in rendered_cells(show_results(hits, ncols=4)):
        assert text_box.y1 <= box.y0 + 1, text  # below the picture (display y grows upwards)
        assert box.x0 <= (text_box.x0 + text_box.x1) / 2 <= box.x1, text  # and centred under it
        assert re.fullmatch(r"[a-z]+_[a-z]+\n\d\.\d{3}", text)


def test_a_file_that_is_gone_shows_as_a_grey_square_with_its_label(hits, tmp_path):
    from dataclasses import replace

    gone = [hits[0], replace(hits[1], filepath=str(tmp_path / "gone.png"))]
    (first, first_text, _), (grey, grey_text, _) = rendered_cells(show_results(gone, ncols=2))
    assert shape_colour(first) == "red" and first_text.startswith(hits[0].label)
    assert shape_colour(grey).startswith("none") and grey_text.startswith(hits[1].label)
