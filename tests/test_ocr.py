"""Words in pictures: read for real by RapidOCR (the ocr extra, in dev) on pictures made here, stored by
``textimg index --ocr``, and found by Milvus' full-text search (BM25) and its hybrid search.

The quality test prints its figures (``pytest tests/test_ocr.py -k quality -s``); docs/evaluation.md
reports them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

from conftest import create_older_collection, run_cli
from word_images import KEYS, make_word_images, sign_picture
from textimg_helpers import ocr
from textimg_helpers.ocr import OCR_MISSING, WordReader


class Library(NamedTuple):
    uri: Path
    folder: Path
    keys: dict[Path, str]  # "" for a picture without words


@pytest.fixture(scope="module")
def library(tmp_path_factory, shapes_encoder) -> Library:
    """The labelled set (20 signs, 4 screenshots, 6 pictures without words) indexed with --ocr."""
    root = tmp_path_factory.mktemp("words")
    keys = make_word_images(root / "pictures")
    run = run_cli("index", root / "pictures", "--uri", root / "milvus.db", "--ocr", "-q")
    assert run.summary == {"indexed": 30, "skipped": 0, "unchanged": 0, "total": 30}, run.err
    return Library(root / "milvus.db", root / "pictures", keys)


def search(library: Library, query: str, *options) -> list[dict]:
    run = run_cli("search", query, "--uri", library.uri, "--json", "-q", *options)
    assert run.code == 0, run.err
    return json.loads(run.out)


def test_the_words_of_a_sign_and_a_screenshot_are_read_and_a_blank_picture_has_none(tmp_path):
    reader = WordReader()
    assert reader._engine is None  # nothing loaded before the first picture
    sign = sign_picture("Bakery 1987", (1024, 768), 48, 10, seed=3)
    assert reader.read_image(sign) == "Bakery 1987"
    assert reader.read_image(Image.new("RGB", (800, 600), (120, 160, 200))) == ""
    sign.save(tmp_path / "sign.jpg", quality=90)
    assert reader.read_file(tmp_path / "sign.jpg") == "Bakery 1987"


def test_quality_words_first_with_match_words_and_in_the_top_5_with_both(library):
    queries = {path: key for path, key in library.keys.items() if key}
    first = sum([h["filepath"] for h in search(library, key, "--match", "words", "-k", "1")] == [str(path)]
                for path, key in queries.items())
    top5 = sum(str(path) in [h["filepath"] for h in search(library, key, "--match", "both", "-k", "5")]
               for path, key in queries.items())
    print(f"\nOCR quality on {len(queries)} queries ({len(library.keys) - len(queries)} pictures without words "
          f"beside them): rank 1 with --match words {first}/{len(queries)} = {first / len(queries):.0%}; "
          f"top 5 with --match both {top5}/{len(queries)} = {top5 / len(queries):.0%}")
    assert first >= 0.9 * len(queries) and top5 >= 0.9 * len(queries)


def test_hits_carry_the_words_read_and_both_is_the_default(library):
    hits = search(library, "PHARMACY", "-k", "3")
    assert hits[0]["filepath"].endswith("sign_01.jpg") and hits[0]["text"] == "PHARMACY"
    assert hits[0]["score"] > hits[1]["score"]  # found by both searches, fused first
    assert all("text" in hit for hit in hits)
    words = search(library, "pharmacy", "--match", "words")
    assert [Path(h["filepath"]).name for h in words] == ["sign_01.jpg"]  # only rows holding the word
    plain = search(library, "a picture", "--match", "image", "-k", "30")
    stray = [h["text"] for h in plain if "plain" in h["filepath"]]  # at most a stray character on a noisy picture
    assert len(plain) == 30 and len(stray) == 6 and not any(key.lower() in text.lower() for key in KEYS for text in stray)


def test_filters_apply_to_every_mode(library):
    screens = 'label == "screen"'
    assert search(library, "PHARMACY", "--match", "words", "--where", screens) == []
    both = search(library, "PHARMACY", "--match", "both", "--where", screens, "-k", "10")
    assert len(both) == 4 and all(h["label"] == "screen" for h in both)
    assert search(library, "Tram 14", "--match", "words", "--where", screens)[0]["filepath"].endswith("screen_21.png")
    assert search(library, "PHARMACY", "--match", "words", "--min-score", "50") == []
    assert search(library, "PHARMACY", "--match", "words", "--after", "2999-01-01") == []


def test_similar_and_combined_queries_keep_working_on_a_collection_with_words(library):
    run = run_cli("similar", library.folder / "sign_00.jpg", "--uri", library.uri, "--json", "-q", "-k", "3")
    assert run.code == 0, run.err
    assert json.loads(run.out)[0]["filepath"].endswith("sign_00.jpg")
    combined = search(library, "MUSEUM", "--plus", str(library.folder / "sign_03.jpg"), "-k", "3")
    assert combined[0]["filepath"].endswith("sign_03.jpg")


def test_an_image_query_cannot_search_words(library):
    run = run_cli("search", library.folder / "sign_00.jpg", "--match", "words", "--uri", library.uri, "-q")
    assert run.code == 1 and run.last_err.startswith("textimg: error: --match words searches the words")


@pytest.fixture
def counted_reads(monkeypatch) -> list[str]:
    """The paths whose words are read (``WordReader.read_file``), in order."""
    reads, read_file = [], WordReader.read_file

    def counting(self, path):
        reads.append(Path(path).name)
        return read_file(self, path)

    monkeypatch.setattr(WordReader, "read_file", counting)
    return reads


def test_ocr_on_a_collection_indexed_without_it_reads_only_the_words(tmp_path, shapes_encoder, counted_reads):
    folder, uri = tmp_path / "pictures", tmp_path / "milvus.db"
    folder.mkdir()
    sign_picture("MUSEUM", (800, 600), 56, -6, seed=1).save(folder / "museum.jpg")
    sign_picture("Harbour", (800, 600), 56, 8, seed=2).save(folder / "harbour.jpg")
    Image.new("RGB", (640, 480), (90, 120, 80)).save(folder / "field.jpg")
    assert run_cli("index", folder, "--uri", uri, "-q").summary["indexed"] == 3 and counted_reads == []
    refused = run_cli("search", "museum", "--match", "words", "--uri", uri, "-q")
    assert refused.code == 1 and "holds no words read from its pictures: index it with --ocr" in refused.last_err

    run = run_cli("index", folder, "--uri", uri, "--ocr", "-q")
    assert run.summary == {"indexed": 0, "skipped": 0, "unchanged": 3, "total": 3}  # nothing encoded again
    assert "read the words of 3 images indexed before" in run.out and sorted(counted_reads) == [
        "field.jpg", "harbour.jpg", "museum.jpg"]
    assert search(Library(uri, folder, {}), "harbour", "--match", "words")[0]["text"] == "Harbour"

    counted_reads.clear()
    assert run_cli("index", folder, "--uri", uri, "--ocr", "-q").summary["unchanged"] == 3 and counted_reads == []
    os.utime(folder / "museum.jpg", ns=(1, 1))  # edited: its vector and its words are read again
    again = run_cli("index", folder, "--uri", uri, "-q")  # without --ocr: the collection keeps reading words
    assert again.summary == {"indexed": 1, "skipped": 0, "unchanged": 2, "total": 3} and counted_reads == ["museum.jpg"]


def test_ocr_without_the_extra_says_what_to_install(tmp_path, monkeypatch, shapes_encoder):
    monkeypatch.setattr(ocr, "ocr_available", lambda: False)
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    run = run_cli("index", folder, "--uri", tmp_path / "milvus.db", "--ocr", "-q")
    assert run.code == 1 and run.last_err == f"textimg: error: {OCR_MISSING}"
    assert 'pip install "textimg-helpers[ocr]"' in OCR_MISSING


def test_the_ocr_engine_is_imported_only_when_words_are_read():
    code = ("import sys, textimg_helpers.ocr, textimg_helpers.ingest, textimg_helpers.cli; "
            "print('rapidocr' in sys.modules, 'onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_an_old_collection_without_metadata_gets_metadata_and_words_with_ocr_keeping_its_vectors(
        tmp_path, shapes_encoder, counted_reads):
    import numpy as np
    from textimg_helpers.data import label_for, load_image
    from textimg_helpers.milvus import connect
    from textimg_helpers.store import path_id

    folder, uri = tmp_path / "pictures", tmp_path / "old.db"
    folder.mkdir()
    sign_picture("Florist", (800, 600), 56, 4, seed=5).save(folder / "florist.jpg")
    client = connect(str(uri))
    create_older_collection(client, "textimg_shapes_clip")
    path = folder / "florist.jpg"
    emb = shapes_encoder.encode_images([load_image(path)])[0]
    client.insert("textimg_shapes_clip", [{"id": path_id(str(path)), "filepath": str(path), "label": label_for(path),
                                           "size": path.stat().st_size, "mtime": path.stat().st_mtime_ns,
                                           "vector": emb.tolist()}])
    run = run_cli("index", folder, "--uri", uri, "--ocr")
    assert run.summary == {"indexed": 0, "skipped": 0, "unchanged": 1, "total": 1}, run.err
    assert "rows now store date taken, camera and place, and a place for the words" in run.err
    assert counted_reads == ["florist.jpg"]
    (row,) = client.query("textimg_shapes_clip", filter="", output_fields=["vector", "text", "taken"], limit=10)
    assert np.allclose(row["vector"], emb, atol=1e-6) and row["text"] == "Florist" and row["taken"] > 0
    client.close()


def test_the_app_offers_the_three_modes_and_shows_the_words_of_each_hit(library, shapes_encoder):
    from textimg_helpers.config import Settings
    from textimg_helpers.session import Session
    from textimg_helpers.web.app import ExploreApp

    session = Session.from_settings(Settings(profile="shapes", milvus_uri=str(library.uri),
                                             data_dir=library.uri.parent / "data"))
    session._encoder = shapes_encoder
    app = ExploreApp(session, top_k=3, progress=False)
    try:
        assert app.panel.match.value == "both" and not app.panel.match.disabled  # the collection has words
        app.panel.query.value = "bakery"
        app.panel.submit.click()
        assert app.panel.hits[0].text == "BAKERY" and "(match: words and pictures)" in app.panel.status.value
        assert '">BAKERY</i>' in app.panel.results.children[0].children[-1].value  # its words, under it
        app.panel.match.value = "words"
        app.panel.submit.click()
        assert [hit.text for hit in app.panel.hits] == ["BAKERY"]
        app.panel.match.value = "image"
        app.panel.submit.click()
        assert len(app.panel.hits) == 3 and "match" not in app.panel.status.value
    finally:
        session.connect().close()


def test_a_milvus_2_3_server_refuses_the_words_in_one_line(milvus_server, tmp_path, shapes_encoder):
    folder = tmp_path / "pictures"
    folder.mkdir()
    sign_picture("EXIT", (640, 480), 64, 0, seed=7).save(folder / "exit.jpg")
    run = run_cli("index", folder, "--uri", milvus_server, "--collection", "words_on_2_3", "--ocr", "-q")
    assert run.code == 1 and "full-text search needs Milvus 2.5 or later" in run.last_err, run.err
    again = run_cli("index", folder, "--uri", milvus_server, "--collection", "words_on_2_3", "-q")  # no half-made collection
    assert again.summary == {"indexed": 1, "skipped": 0, "unchanged": 0, "total": 1}, again.err
