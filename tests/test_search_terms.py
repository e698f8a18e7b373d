"""Combined queries: text and image terms added and subtracted, in the helpers, the CLI and the panel."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHAPES_COLLECTION as COLLECTION
from test_errors import assert_error
from textimg_helpers.search import (Term, combine_vectors, describe_terms, parse_expression, parse_term,
                                     search_by_terms)
from textimg_helpers.config import TextimgError
from textimg_helpers.milvus import connect
from textimg_helpers.widgets import SearchPanel


def labels(run) -> list[str]:
    """The labels of the ``score  path`` lines of a search, best first (``blue_circle_0002.png`` -> ``blue_circle``)."""
    return [re.sub(r"_\d+$", "", Path(line.split("  ", 1)[1]).stem) for line in run.out.splitlines()]


# --- the terms a user types -------------------------------------------------------------------------

def test_a_term_is_an_image_by_its_extension_and_weight_comes_before_a_colon():
    assert parse_term("a dog") == Term("a dog", 1.0, False)
    assert parse_term("2:a dog") == Term("a dog", 2.0, False)
    assert parse_term("0.5:holiday/Beach.JPG", -1) == Term("holiday/Beach.JPG", -0.5, True)
    assert parse_term("3:00 pm at the station") == Term("3:00 pm at the station")  # a time, not a weight
    with pytest.raises(TextimgError, match="weight .* is 0: a weight is a positive number"):
        parse_term("0:a dog")


def test_an_expression_joins_terms_with_spaced_signs():
    terms = parse_expression("a red circle - red + 2:blue")
    assert terms == [Term("a red circle"), Term("red", -1.0), Term("blue", 2.0)]
    assert describe_terms(terms) == "'a red circle' - 'red' + 2:'blue'"
    assert parse_expression("a t-shirt") == [Term("a t-shirt")]  # no spaces around the sign: one word
    with pytest.raises(TextimgError, match="at least one term to add"):
        parse_expression("- red")


def test_the_query_vector_is_the_weighted_sum_normalised_again():
    embs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_allclose(combine_vectors(embs, [2, -1, 0]), [[2 / 5 ** 0.5, -1 / 5 ** 0.5, 0]], rtol=1e-6)
    with pytest.raises(TextimgError, match="cancel each other out"):
        combine_vectors(embs[[0, 0]], [1, -1])


# --- what comes back ----------------------------------------------------------------------------------

def test_red_circle_minus_red_plus_blue_finds_blue_circles(indexed, shapes_encoder):
    uri, _ = indexed
    client = connect(uri)
    try:
        plain = search_by_terms(client, COLLECTION, shapes_encoder, [Term("a red circle")], top_k=3)
        arithmetic = search_by_terms(client, COLLECTION, shapes_encoder,
                                     parse_expression("a red circle - red + blue"), top_k=3)
        shape_swap = search_by_terms(client, COLLECTION, shapes_encoder,
                                     parse_expression("a red circle - circle + square"), top_k=3)
    finally:
        client.close()
    assert [hit.label for hit in plain] == ["red_circle"] * 3
    assert [hit.label for hit in arithmetic] == ["blue_circle"] * 3
    assert [hit.label for hit in shape_swap] == ["red_square"] * 3


def test_cli_text_plus_an_image_minus_a_text(cli, indexed, tmp_path):
    """"a circle" + a photo of a blue square - "a square": the photo's colour, the text's shape."""
    uri, images = indexed
    photo = tmp_path / "photo.png"  # a name that says nothing: only the pixels say "blue square"
    shutil.copy(images / "blue_square_0001.png", photo)
    run = cli("search", "a circle", "--plus", photo, "--minus", "a square", "-k", 3, "--uri", uri)
    assert run.code == 0, run.err
    assert labels(run) == ["blue_circle"] * 3
    assert all(re.fullmatch(r"\d\.\d{3}  /.+\.png", line) for line in run.out.splitlines())


def test_cli_weights_tip_the_balance(cli, indexed):
    """A photo of a red circle plus "a blue circle": at equal weights red circles still come first (the
    photo outweighs the text); with the text weighted 2, blue circles take the top three places."""
    uri, images = indexed
    photo = images / "red_circle_0000.png"
    even = cli("search", photo, "--plus", "a blue circle", "-k", 3, "--uri", uri, "--json")
    weighted = cli("search", photo, "--plus", "2:a blue circle", "-k", 3, "--uri", uri, "--json")
    assert even.code == weighted.code == 0, (even.err, weighted.err)
    assert json.loads(even.out)[0]["label"] == "red_circle"
    assert [hit["label"] for hit in json.loads(weighted.out)] == ["blue_circle"] * 3


def test_cli_unreadable_image_terms_are_one_line_errors_before_any_model_loads(cli, indexed, tmp_path):
    uri, _ = indexed
    garbage = tmp_path / "shapes-clip.pt"  # the model's name, but loading it would fail loudly
    garbage.write_bytes(b"not a checkpoint")
    (tmp_path / "page.jpg").write_text("<html>404 Not Found</html>")
    options = ["--uri", uri, "--model", garbage, "--collection", COLLECTION]
    assert_error(cli("search", "a dog", "--plus", tmp_path / "nothere.png", *options),
                 f"image not found: {tmp_path / 'nothere.png'}")
    assert_error(cli("search", "a dog", "--minus", tmp_path / "page.jpg", *options),
                 f"cannot read image {tmp_path / 'page.jpg'}: not an image: the file holds text or HTML")
    assert_error(cli("search", "a dog", "--minus", "a dog", "--uri", uri), "the terms cancel each other out")


def test_panel_takes_a_combined_query_in_its_box(indexed, shapes_encoder):
    uri, _ = indexed
    client = connect(uri)
    try:
        panel = SearchPanel(client, COLLECTION, shapes_encoder, top_k=3)
        panel.query.value = "a red circle - red + blue"
        panel.submit.click()
        captions = [re.sub(r"<[^>]+>", "", card.children[1].value).split()[0] for card in panel.results.children]
        status = panel.status.value
        panel.query.value = "a circle + nothere.png"
        panel.submit.click()
    finally:
        client.close()
    assert captions == ["blue_circle"] * 3
    assert "top 3 for &#x27;a red circle&#x27; - &#x27;red&#x27; + &#x27;blue&#x27;" in status
    assert "image not found: nothere.png" in panel.status.value and "#b00020" in panel.status.value
    assert [hit.label for hit in panel.hits] == ["blue_circle"] * 3  # the error kept the results


def test_text_terms_go_through_the_text_encoder_and_images_through_the_image_encoder(indexed, shapes_encoder,
                                                                                      tmp_path):
    """With a separate text encoder (e.g. a multilingual one), text terms are read by it: here a stand-in
    that reads every text as "a blue circle", so "a red circle" finds blue circles; images still go
    through the CLIP image encoder."""
    uri, images = indexed

    class ReadsBlueCircles:
        def encode_texts(self, texts):
            return shapes_encoder.encode_texts(["a blue circle"] * len(texts))

    client = connect(uri)
    try:
        by_text = search_by_terms(client, COLLECTION, shapes_encoder, [Term("a red circle")], top_k=3,
                                  text_encoder=ReadsBlueCircles())
        photo = str(images / "green_star_0000.png")
        by_image = search_by_terms(client, COLLECTION, shapes_encoder, [Term(photo, 1.0, True)], top_k=1,
                                   text_encoder=ReadsBlueCircles())
    finally:
        client.close()
    assert [hit.label for hit in by_text] == ["blue_circle"] * 3
    assert by_image[0].filepath == photo

