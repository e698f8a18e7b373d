"""The search panel, driven as a person would: type, move the slider, press the buttons."""

import html
import os
import re

import pytest

from textimg_helpers.data import shapes_images
from textimg_helpers.ingest import index_folder
from textimg_helpers.store import connect
from textimg_helpers.widgets import SearchPanel

COLLECTION = "panel_test"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shapes_encoder):
    """Three generated images per shape class, indexed in a Milvus Lite file of its own."""
    root = tmp_path_factory.mktemp("panel")
    folder = shapes_images(root, per_class=3)
    client = connect(str(root / "milvus.db"))
    report = index_folder(client, COLLECTION, folder, shapes_encoder, progress=False, num_workers=0)
    assert report.indexed == len(os.listdir(folder))
    yield client
    client.close()


@pytest.fixture
def panel(indexed, shapes_encoder):
    """A fresh panel on the indexed images (``shapes_encoder`` comes from tests/conftest.py)."""
    return SearchPanel(indexed, COLLECTION, shapes_encoder)


def status(panel):
    """The status line as a person reads it (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status.value))


def captions(panel):
    """The ``label score`` text under each thumbnail, in order."""
    return [html.unescape(re.sub(r"<[^>]+>", "", card.children[1].value)) for card in panel.results.children]


def test_submit_shows_k_thumbnails_of_red_circles(panel):
    panel.query.value = "a red circle"
    panel.k.value = 3
    panel.submit.click()
    cards = panel.results.children
    assert len(cards) == 3 and len(panel.hits) == 3
    assert all(bytes(card.children[0].value).startswith(b"\x89PNG") for card in cards)
    assert [text.split()[0] for text in captions(panel)] == ["red_circle"] * 3
    assert captions(panel)[0] == f"red_circle {panel.hits[0].score:.3f}"
    assert status(panel) == "top 3 for 'a red circle'"


def test_more_like_this_puts_that_image_first(panel):
    panel.query.value = "a blue square"
    panel.k.value = 4
    panel.submit.click()
    chosen = panel.hits[1]
    panel.results.children[1].children[2].click()  # its "more like this" button
    assert len(panel.results.children) == 4
    assert panel.hits[0].filepath == chosen.filepath
    assert panel.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert captions(panel)[0].startswith(chosen.label)
    assert status(panel) == f"top 4 like {os.path.basename(chosen.filepath)}"


def test_a_click_on_a_thumbnail_is_more_like_this(panel):
    panel.query.value = "a blue square"
    panel.k.value = 4
    panel.submit.click()
    chosen = panel.hits[2]
    image = panel.results.children[2].children[0]
    image._textimg_click._handle_mouse_msg(None, {"type": "click"}, [])  # what ipyevents sends on a click
    assert panel.hits[0].filepath == chosen.filepath
    assert status(panel) == f"top 4 like {os.path.basename(chosen.filepath)}"


def test_empty_query_shows_an_error_and_keeps_the_results(panel):
    panel.query.value = "a red circle"
    panel.submit.click()
    before = list(panel.hits)
    panel.query.value = "   "
    panel.submit.click()  # must not raise
    assert status(panel).startswith("the query is empty") and "color:#b00020" in panel.status.value
    assert panel.hits == before and len(panel.results.children) == len(before)


def test_long_query_still_searches_and_says_it_was_truncated(panel):
    panel.query.value = "a red circle " + "on a plain background " * 30
    panel.submit.click()
    assert len(panel.hits) == panel.k.value
    assert status(panel).startswith(f"top {panel.k.value} for") and "CLIP reads only the first 77" in status(panel)
