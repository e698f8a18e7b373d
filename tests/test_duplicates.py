"""Near-duplicates: planted copies of one photo come back as one group, distinct shapes as none."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from test_errors import assert_error
from textimg_helpers.duplicates import group_rows
from textimg_helpers.shapes import generate_shapes


@pytest.fixture(scope="module")
def planted(tmp_path_factory, shapes_encoder):
    """``distinct/``: one 128 px image of 39 shape classes; ``planted/``: a JPEG photo of the 40th
    class (green star) with a byte copy, a copy re-saved at JPEG quality 70 and a copy at half size,
    and a byte copy of ``distinct/red_circle_0000.png``. Indexed twice into one Lite file: the
    distinct images alone (collection ``distinct``), and everything (the default collection)."""
    root = tmp_path_factory.mktemp("duplicates")
    images, planted = root / "images", root / "images" / "planted"
    generate_shapes(images / "distinct", per_class=1, size=128)
    planted.mkdir()
    star = images / "distinct" / "green_star_0000.png"
    photo = Image.open(star).convert("RGB")
    star.unlink()  # the photo's class is nowhere else: same-class shapes are alike for this small model
    photo.save(planted / "photo.jpg", quality=95)
    shutil.copy(planted / "photo.jpg", planted / "photo_copy.jpg")
    photo.save(planted / "photo_q70.jpg", quality=70)
    photo.resize((64, 64), Image.Resampling.LANCZOS).save(planted / "photo_small.png")
    shutil.copy(images / "distinct" / "red_circle_0000.png", planted / "red_circle_copy.png")
    uri = str(root / "milvus.db")
    assert run_cli("index", images / "distinct", "--uri", uri, "--collection", "distinct", "-q").code == 0
    assert run_cli("index", images, "--uri", uri, "-q").summary["total"] == 39 + 5
    return uri, images


def snapshot(text: str, folder: Path) -> str:
    """Paths under a placeholder, scores as S (they depend on the model's last digits)."""
    return re.sub(r"\d\.\d{3}  ", "S  ", text.replace(str(folder), "<DIR>"))


def test_copies_form_one_group_biggest_first_and_distinct_shapes_none(cli, planted):
    uri, images = planted
    run = cli("duplicates", "--uri", uri)
    assert run.code == 0, run.err
    lines = snapshot(run.out, images).splitlines()
    assert lines[0] == "group 1: 4 images" and lines[5] == "group 2: 2 images"
    assert sorted(lines[1:5]) == ["S  <DIR>/planted/photo.jpg", "S  <DIR>/planted/photo_copy.jpg",
                                  "S  <DIR>/planted/photo_q70.jpg", "S  <DIR>/planted/photo_small.png"]
    assert sorted(lines[6:8]) == ["S  <DIR>/distinct/red_circle_0000.png", "S  <DIR>/planted/red_circle_copy.png"]
    assert lines[8:] == ["groups=2 images=6 rows=44 threshold=0.95"]
    scores = [float(line.split()[0]) for line in run.out.splitlines()[1:5]]
    assert scores[0] == 1.0 and scores == sorted(scores, reverse=True) and min(scores) >= 0.95


def test_distinct_shapes_alone_form_no_group(cli, planted):
    uri, _ = planted
    run = cli("duplicates", "--uri", uri, "--collection", "distinct")
    assert run.code == 0, run.err
    assert run.out == "groups=0 images=0 rows=39 threshold=0.95\n"


def test_json_lists_groups_of_hits_and_no_model_is_loaded(cli, planted, tmp_path):
    uri, images = planted
    garbage = tmp_path / "shapes-clip.pt"  # loading it would fail loudly
    garbage.write_bytes(b"not a checkpoint")
    run = cli("duplicates", "--json", "--uri", uri, "--model", garbage, "--collection", "textimg_shapes_clip")
    assert run.code == 0, run.err
    groups = json.loads(run.out)
    assert [g["size"] for g in groups] == [4, 2] and [len(g["images"]) for g in groups] == [4, 2]
    assert {Path(h["filepath"]).name for h in groups[1]["images"]} == {"red_circle_0000.png", "red_circle_copy.png"}
    assert [h["score"] for h in groups[1]["images"]] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert set(groups[0]["images"][0]) == {"filepath", "label", "score", "id"}


def test_a_high_threshold_keeps_only_the_byte_copies(cli, planted):
    uri, images = planted
    run = cli("duplicates", "--uri", uri, "--threshold", "0.99999")
    names = [Path(line.split("  ", 1)[1]).name for line in run.out.splitlines() if "  " in line]
    assert sorted(names) == ["photo.jpg", "photo_copy.jpg", "red_circle_0000.png", "red_circle_copy.png"]
    assert run.out.splitlines()[-1] == "groups=2 images=4 rows=44 threshold=0.99999"


@pytest.mark.parametrize("threshold", ["0", "1.5"])
def test_threshold_must_be_a_cosine(cli, planted, threshold):
    uri, _ = planted
    assert_error(cli("duplicates", "--uri", uri, "--threshold", threshold),
                 f"--threshold is a cosine above 0 and at most 1, not {float(threshold)}", code=2)


def test_groups_are_the_same_whatever_the_block_size():
    """Pairs across blocks count: a chain a-b-c-d split over blocks of 2 rows is still one group."""
    angle = np.radians(np.array([0, 10, 20, 30, 90, 180, 181]))  # cos 10 deg = 0.985, cos 1 deg = 0.9998
    embs = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    for block_size in (1, 2, 3, 100):
        assert group_rows(embs, 0.98, block_size) == [[0, 1, 2, 3], [5, 6]], block_size
    assert group_rows(embs, 0.9999, 2) == []


def test_stored_vectors_are_read_page_by_page_and_stay_with_their_rows(planted, shapes_encoder):
    from textimg_helpers.data import load_image
    from textimg_helpers.duplicates import read_vectors
    from textimg_helpers.store import connect

    uri, images = planted
    client = connect(uri)
    try:
        rows, image_embs = read_vectors(client, "textimg_shapes_clip", batch_size=10)  # 5 pages
    finally:
        client.close()
    assert len(rows) == 44 and image_embs.shape == (44, shapes_encoder.dim)
    paths = [row["filepath"] for row in rows]
    picked = [paths.index(str(images / name)) for name in ("planted/photo_q70.jpg", "distinct/blue_cross_0000.png")]
    again = shapes_encoder.encode_images([load_image(paths[i]) for i in picked])
    np.testing.assert_allclose((image_embs[picked] * again).sum(axis=1), [1, 1], atol=1e-3)


def test_where_narrows_the_rows_and_a_bad_filter_is_one_line(cli, planted):
    uri, images = planted
    run = cli("duplicates", "--uri", uri, "--where", f'filepath like "{images}/planted/%"')
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == "group 1: 4 images"
    assert run.out.splitlines()[-1] == "groups=1 images=4 rows=5 threshold=0.95"  # the red circle's twin is out
    assert_error(cli("duplicates", "--uri", uri, "--where", 'label = = "x'),
                 "Milvus refused to read the rows with filter 'label = = \"x'")
