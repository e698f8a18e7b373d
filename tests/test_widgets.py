"""The search panel, driven as a person would: type, move the slider, press the buttons."""

import html
import io
from datetime import datetime, timezone
import os
import re

import pytest
from PIL import Image

from conftest import SHAPES_COLLECTION, shape_colour
from textimg_helpers.milvus import connect
from textimg_helpers.widgets import THUMB_SIZE, SearchPanel


@pytest.fixture(scope="module")
def client(indexed):
    """A client of the shared indexed file (120 shapes images, see tests/conftest.py)."""
    client = connect(indexed.uri)
    yield client
    client.close()


@pytest.fixture
def panel(client, shapes_encoder):
    """A fresh panel on the indexed images (``shapes_encoder`` comes from tests/conftest.py)."""
    return SearchPanel(client, SHAPES_COLLECTION, shapes_encoder)


def status(panel):
    """The status line as a person reads it (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status.value))


def captions(panel):
    """The ``label score`` text under each thumbnail, in order."""
    return [html.unescape(re.sub(r"<[^>]+>", "", card.children[1].value)) for card in panel.results.children]


def pictures(panel) -> list[Image.Image]:
    """The thumbnail of each card, decoded as the browser shows it."""
    return [Image.open(io.BytesIO(card.children[0].value)) for card in panel.results.children]


def test_submit_shows_k_thumbnails_of_red_circles(panel):
    panel.query.value = "a red circle"
    panel.k.value = 3
    panel.submit.click()
    cards = panel.results.children
    assert len(cards) == 3 and len(panel.hits) == 3
    assert [shape_colour(picture) for picture in pictures(panel)] == ["red"] * 3
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


def test_searching_again_and_again_keeps_the_kernel_from_filling_up(panel):
    """Replaced cards are closed: their thumbnails do not stay in the kernel, search after search."""
    from ipywidgets.widgets.widget import _instances

    panel.query.value = "a red circle"
    panel.submit.click()
    live = len(_instances)
    for query in ["a blue square", "a green triangle"] * 5:
        panel.query.value = query
        panel.submit.click()
    assert len(_instances) == live
    assert captions(panel)[0].startswith("green_triangle")


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


def test_each_thumbnail_shows_the_image_its_caption_names(panel):
    """Circles of several colours: a card showing another hit's picture, or a grey square, is caught."""
    panel.query.value = "a circle"
    panel.k.value = 20
    panel.submit.click()
    named = [text.split()[0].split("_")[0] for text in captions(panel)]
    assert len(set(named)) >= 4, named  # several colours, or this check could not see a mix-up
    shown = pictures(panel)
    assert [shape_colour(picture) for picture in shown] == named
    assert all(picture.format == "PNG" and max(picture.size) <= THUMB_SIZE for picture in shown)
    assert [card.children[0].width for card in panel.results.children] == [str(THUMB_SIZE)] * 20


# --- "more like this photo": a learner's own photo, given to the upload button ----------------------------

def upload(panel, name: str, content: bytes) -> None:
    """What the browser does when a file is chosen: the upload button's value becomes that file."""
    panel.upload.value = ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                           "last_modified": datetime.now(timezone.utc)},)


def own_photo(tmp_path, label: str = "blue_square") -> bytes:
    """A photo the collection does not hold (another seed than the indexed images), as PNG bytes."""
    from textimg_helpers.shapes import generate_shapes

    paths = generate_shapes(tmp_path / "camera", per_class=1, seed=7, size=80)
    return next(path for path in paths if path.name.startswith(label)).read_bytes()


def test_an_uploaded_photo_finds_its_kind_and_is_never_saved(panel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = own_photo(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    panel.k.value = 3
    upload(panel, "my photo.png", photo)
    assert [text.split()[0] for text in captions(panel)] == ["blue_square"] * 3
    assert status(panel) == "top 3 like your photo my photo.png"
    assert panel.upload.value == ()  # emptied: the same photo can be given again
    assert sorted(tmp_path.rglob("*")) == before  # read from memory: no file written


@pytest.mark.parametrize("name, content, expected", [
    ("notes.png", b"<html>not a photo</html>", "cannot read image notes.png: not an image: the file holds text or HTML"),
    ("photo.txt", b"whatever", "cannot read image photo.txt: upload a photo as .jpg, .png, .webp, .heic"),
    ("shot.dng", b"II*\0", "cannot read image shot.dng: upload a photo as .jpg, .png, .webp, .heic"),
    ("../../etc/empty.png", b"", "cannot read image empty.png: empty file (0 bytes)"),
])
def test_a_bad_upload_says_why_and_keeps_the_results(panel, name, content, expected):
    panel.query.value = "a red circle"
    panel.submit.click()
    shown = captions(panel)
    upload(panel, name, content)
    assert status(panel).startswith(expected), status(panel)
    assert captions(panel) == shown


def test_an_upload_too_big_or_too_many_pixels_is_refused_before_decoding(panel, tmp_path, monkeypatch):
    from conftest import png_header_only
    from textimg_helpers import data

    bomb = png_header_only(tmp_path / "bomb.png", 20_000, 20_000).read_bytes()
    upload(panel, "bomb.png", bomb)
    assert status(panel).startswith("cannot read image bomb.png: refused as a possible decompression bomb"), \
        status(panel)
    monkeypatch.setattr(data, "MAX_UPLOAD_BYTES", 1000)
    upload(panel, "big.png", own_photo(tmp_path) + b"\0" * 2000)
    assert status(panel).startswith("cannot read image big.png: ") and "MB an uploaded photo may have" in status(panel), status(panel)
