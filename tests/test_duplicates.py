"""Near-duplicates: planted copies of one photo come back as one group, distinct shapes as none."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from test_errors import assert_error
from textimg_helpers import duplicates
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
    assert lines[0] in ("group 1: 4 images, near-identical", "group 1: 4 images, similar")
    assert lines[5] == "group 2: 2 images, identical"  # a byte copy
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
    assert set(groups[0]["images"][0]) >= {"filepath", "label", "score", "id", "taken", "width", "height"}
    assert groups[1]["tier"] == "identical" and groups[0]["tier"] in ("near-identical", "similar")


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


def clustered(n: int, clusters: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, set]:
    """Unit vectors around ``clusters`` centres (cosine about 0.7 within one), 2% of them near-copies
    (cosine about 0.99) of another row, a few copies in chains; and the planted pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] / np.sqrt(dim) + rng.standard_normal((n, dim)) * 0.65 / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = rng.choice(n, size=n // 25 * 2, replace=False)
    for original, copy in zip(rows[::2], rows[1::2]):
        x[copy] = x[original] + rng.standard_normal(dim) * 0.1 / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), {tuple(sorted(p)) for p in zip(rows[::2].tolist(), rows[1::2].tolist())}


def pairs_of(found) -> set:
    return {pair for i, j in found for pair in zip(i.tolist(), j.tolist())}


@pytest.mark.parametrize("threshold", [0.95, 0.9, 0.85])
def test_pivots_find_the_same_pairs_as_every_pair_compared(threshold):
    """On clustered vectors the pivots rule most pairs out; they must still find every pair that
    comparing all pairs finds, and no other."""
    embs, planted = clustered(6000, 40)
    plan = duplicates.pivot_plan(embs, threshold)
    assert plan is not None, "pivots were not used on clustered vectors"
    compared = sum(len(m) * len(c) for m, c in zip(*plan))
    assert compared < 0.5 * len(embs) ** 2 / 2
    every = pairs_of(duplicates.all_pairs(embs, threshold))
    assert pairs_of(duplicates.pivot_pairs(embs, threshold, plan)) == every
    assert pairs_of(duplicates.linked_pairs(embs, threshold)) == every
    assert planted <= every
    assert group_rows(embs, threshold) == group_rows(embs, threshold, pivots=False)


def test_pivots_step_aside_where_they_cannot_help():
    """Vectors spread evenly, or not of unit length (the angle bounds need cosines): every pair is compared."""
    rng = np.random.default_rng(1)
    spread = rng.standard_normal((3000, 64)).astype(np.float32)
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    assert duplicates.pivot_plan(spread, 0.95) is None
    embs, _ = clustered(3000, 20)
    assert duplicates.pivot_plan(embs, 0.5) is None  # a wide threshold: a pivot's reach takes in most rows
    assert duplicates.pivot_plan(embs * 2, 0.95) is None
    assert pairs_of(duplicates.linked_pairs(embs * 2, 3.8)) == pairs_of(duplicates.all_pairs(embs * 2, 3.8))


def test_stored_vectors_are_read_page_by_page_and_stay_with_their_rows(planted, shapes_encoder):
    from textimg_helpers.data import load_image
    from textimg_helpers.duplicates import read_vectors
    from textimg_helpers.milvus import connect

    uri, images = planted
    client = connect(uri)
    try:
        rows, image_embs = read_vectors(client, "textimg_shapes_clip", batch_size=10)  # pages of 10, 2 threads
        for parts in (1, 3):  # each thread reads a range of ids: together, every row once
            other_rows, other_embs = read_vectors(client, "textimg_shapes_clip", batch_size=10, parts=parts)
            by_id = {row["id"]: emb for row, emb in zip(other_rows, other_embs)}
            assert len(other_rows) == len(by_id) == 44
            np.testing.assert_array_equal(np.stack([by_id[row["id"]] for row in rows]), image_embs)
    finally:
        client.close()
    assert len(rows) == 44 and len({row["id"] for row in rows}) == 44 and image_embs.shape == (44, shapes_encoder.dim)
    paths = [row["filepath"] for row in rows]
    picked = [paths.index(str(images / name)) for name in ("planted/photo_q70.jpg", "distinct/blue_cross_0000.png")]
    again = shapes_encoder.encode_images([load_image(paths[i]) for i in picked])
    np.testing.assert_allclose((image_embs[picked] * again).sum(axis=1), [1, 1], atol=1e-3)


def test_where_narrows_the_rows_and_a_bad_filter_is_one_line(cli, planted):
    uri, images = planted
    run = cli("duplicates", "--uri", uri, "--where", f'filepath like "{images}/planted/%"')
    assert run.code == 0, run.err
    assert run.out.splitlines()[0].startswith("group 1: 4 images, ")
    assert run.out.splitlines()[-1] == "groups=1 images=4 rows=5 threshold=0.95"  # the red circle's twin is out
    assert_error(cli("duplicates", "--uri", uri, "--where", 'label = = "x'),
                 "Milvus refused to read the rows with filter 'label = = \"x'")


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tiers_then_moving_the_extras_and_undoing_leave_the_tree_as_it_was(cli, tmp_path):
    folder = tmp_path / "photos"
    generate_shapes(folder / "a", per_class=1, size=128)
    star = Image.open(folder / "a" / "green_star_0000.png").convert("RGB")
    (folder / "a" / "green_star_0000.png").unlink()
    (folder / "b").mkdir()
    star.save(folder / "a" / "star.jpg", quality=95)
    shutil.copy(folder / "a" / "star.jpg", folder / "b" / "star_copy.jpg")  # identical bytes
    star.resize((256, 256), Image.Resampling.LANCZOS).save(folder / "b" / "star_big.png")  # more pixels
    before = tree(folder)
    db = tmp_path / "m.db"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    listed = cli("duplicates", "--uri", db, "--json", "--threshold", "0.97")
    groups = json.loads(listed.out)
    assert len(groups) == 1 and groups[0]["size"] == 3 and groups[0]["tier"] in ("near-identical", "similar")
    pair = cli("duplicates", "--uri", db, "--where", 'filepath like "%.jpg"', "--threshold", "0.97")
    assert pair.out.splitlines()[0] == "group 1: 2 images, identical", pair.out
    moved_to = tmp_path / "extras"
    run = cli("duplicates", "--uri", db, "--threshold", "0.97", "--move-extras-to", moved_to)
    assert run.code == 0, run.err
    assert run.last_err == (f"moved=2 kept=1 list={moved_to / 'textimg-moved.csv'} (undo: textimg duplicates --undo "
                            f"{moved_to / 'textimg-moved.csv'})")
    assert (folder / "b" / "star_big.png").exists()  # the most pixels is kept
    assert sorted(tree(moved_to)) == ["a/star.jpg", "b/star_copy.jpg", "textimg-moved.csv"]
    with open(moved_to / "textimg-moved.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["state"] == "moved"]  # each move is also listed "moving" first
    assert [Path(r["old_path"]).name for r in rows] == ["star.jpg", "star_copy.jpg"] or \
        [Path(r["old_path"]).name for r in rows] == ["star_copy.jpg", "star.jpg"]
    hits = json.loads(cli("similar", folder / "b" / "star_big.png", "--uri", db, "--json", "-k", "3").out)
    assert {hit["filepath"] for hit in hits} >= {str(moved_to / "a" / "star.jpg"), str(moved_to / "b" / "star_copy.jpg")}
    assert cli("stats", "--uri", db).out.startswith(f"rows={len(before)} ")  # moved, not lost or doubled
    undone = cli("duplicates", "--uri", db, "--undo", moved_to / "textimg-moved.csv")
    assert undone.code == 0 and undone.out.strip() == f"restored=2 list={moved_to / 'textimg-moved.csv'}"
    assert tree(folder) == before  # byte for byte
    hits = json.loads(cli("similar", folder / "b" / "star_big.png", "--uri", db, "--json", "-k", "3").out)
    assert {hit["filepath"] for hit in hits} >= {str(folder / "a" / "star.jpg"), str(folder / "b" / "star_copy.jpg")}
    again = cli("duplicates", "--uri", db, "--undo", moved_to / "textimg-moved.csv")
    assert again.out.strip().startswith("restored=0 ") and "restored already" in again.err
