"""What photos say about themselves (EXIF date taken, camera, GPS, size) stored at indexing, and the
filters, cutoff and order built on it; a collection of the older schema still searched, then upgraded."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import create_older_collection, shapes_folder
from textimg_helpers.data import photo_metadata

PARIS, LYON = (48.8584, 2.2945), (45.7640, 4.8357)


def with_exif(source, target, taken: str | None, camera: tuple[str, str] | None, place=None) -> None:
    """``source`` saved as a JPEG with EXIF as a phone writes it."""
    exif = Image.Exif()
    if camera:
        exif[271], exif[272] = camera
    if taken:
        exif.get_ifd(34665)[36867] = taken
    if place:
        def dms(value):
            value = abs(value)
            return (float(int(value)), float(int(value * 60 % 60)), round(value * 3600 % 60, 4))

        gps = exif.get_ifd(34853)
        gps[1], gps[2], gps[3], gps[4] = "N" if place[0] >= 0 else "S", dms(place[0]), "E" if place[1] >= 0 else "W", dms(place[1])
    Image.open(source).convert("RGB").save(target, quality=95, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The 40 shapes as phone photos: red circles from three cameras, dates and places; the rest plain."""
    root = tmp_path_factory.mktemp("exif")
    shapes = shapes_folder(root / "shapes", per_class=1)
    folder = root / "photos"
    folder.mkdir()
    for path in sorted(shapes.iterdir()):
        with_exif(path, folder / f"{path.stem}.jpg", None, None)
    red = shapes / "red_circle_0000.png"
    with_exif(red, folder / "paris_2023.jpg", "2023:06:01 14:03:22", ("Google", "Pixel 7"), PARIS)
    with_exif(red, folder / "lyon_2021.jpg", "2021:01:01 09:00:00", ("Canon", "EOS R6"), LYON)
    with_exif(red, folder / "paris_2024.jpg", "2024:02:29 23:59:59", ("Google", "Pixel 8"), PARIS)
    return folder


@pytest.fixture(scope="module")
def indexed(photos, tmp_path_factory):
    from conftest import run_cli

    db = tmp_path_factory.mktemp("exif-db") / "m.db"
    assert run_cli("index", photos, "--uri", db, "-q").summary["total"] == 43
    return db


def names(run) -> list[str]:
    assert run.code == 0, run.err
    return [hit["filepath"].rsplit("/", 1)[1] for hit in json.loads(run.out)]


def test_exif_date_camera_place_and_size_are_read(photos):
    meta = photo_metadata(photos / "paris_2023.jpg")
    assert meta["taken_from"] == "exif" and meta["camera"] == "Google Pixel 7"
    assert meta["lat"] == pytest.approx(PARIS[0], abs=1e-4) and meta["lon"] == pytest.approx(PARIS[1], abs=1e-4)
    assert (meta["width"], meta["height"]) == (64, 64)
    plain = photo_metadata(photos / "blue_square_0000.jpg")
    assert plain["taken_from"] == "mtime" and plain["camera"] == "" and "lat" not in plain


def test_json_hits_carry_the_metadata(cli, indexed):
    hits = json.loads(cli("search", "a red circle", "--uri", indexed, "-k", "43", "--json").out)
    paris = next(hit for hit in hits if hit["filepath"].endswith("paris_2023.jpg"))
    assert paris["taken"] == "2023-06-01T14:03:22" and paris["taken_from"] == "exif"
    assert paris["camera"] == "Google Pixel 7" and (paris["width"], paris["height"]) == (64, 64)
    assert paris["lat"] == pytest.approx(PARIS[0], abs=1e-4)
    plain = next(hit for hit in hits if hit["filepath"].endswith("blue_square_0000.jpg"))
    assert plain["camera"] is None and plain["lat"] is None and plain["taken_from"] == "mtime"


def test_dates_are_inclusive_days(cli, indexed):
    search = ("search", "a red circle", "--uri", indexed, "-k", "43", "--json")
    assert set(names(cli(*search, "--after", "2023-06-01", "--before", "2024-02-29"))) >= {"paris_2023.jpg", "paris_2024.jpg"}
    assert "lyon_2021.jpg" not in names(cli(*search, "--after", "2023-06-01"))
    assert set(names(cli(*search, "--before", "2023-06-01"))) == {"paris_2023.jpg", "lyon_2021.jpg"}
    assert names(cli(*search, "--after", "2023-06-02", "--before", "2024-02-28")) == []


def test_camera_place_where_cutoff_and_date_order(cli, indexed):
    search = ("search", "a red circle", "--uri", indexed, "-k", "43", "--json")
    assert set(names(cli(*search, "--camera", "PIXEL"))) == {"paris_2023.jpg", "paris_2024.jpg"}
    assert set(names(cli(*search, "--near", "48.8606,2.3376,5"))) == {"paris_2023.jpg", "paris_2024.jpg"}  # 3 km away
    assert names(cli(*search, "--near", "48.8606,2.3376,1")) == []
    both = cli(*search, "--camera", "canon", "--where", 'filepath like "%lyon%"')
    assert names(both) == ["lyon_2021.jpg"]
    assert names(cli(*search, "--camera", "pixel", "--sort", "date")) == ["paris_2024.jpg", "paris_2023.jpg"]
    best = json.loads(cli(*search).out)[0]["score"]
    assert names(cli(*search, "--min-score", str(best + 1e-6))) == []
    cut = cli("search", "a red circle", "--uri", indexed, "--min-score", "0.999")
    assert cut.code == 0 and cut.out == "" and cut.last_err.startswith("no results with a score of at least 0.999")


def test_the_last_day_and_the_antimeridian_are_filters_too(cli, photos, tmp_path):
    """--before 9999-12-31 keeps every photo; --near at 179.99° east also finds photos just west of -180°."""
    folder = tmp_path / "pacific"
    folder.mkdir()
    red = photos / "red_circle_0000.jpg"
    with_exif(red, folder / "fiji_east.jpg", "2022:05:01 10:00:00", None, (-17.0, 179.995))
    with_exif(red, folder / "fiji_west.jpg", "2022:05:01 11:00:00", None, (-17.0, -179.995))
    with_exif(red, folder / "tonga.jpg", "2022:05:01 12:00:00", None, (-21.1, -175.2))
    db = tmp_path / "m.db"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    search = ("search", "a red circle", "--uri", db, "-k", "10", "--json")
    assert len(names(cli(*search, "--before", "9999-12-31"))) == 3
    assert set(names(cli(*search, "--near=-17,179.99,50"))) == {"fiji_east.jpg", "fiji_west.jpg"}
    assert set(names(cli(*search, "--near=-17,-179.99,50"))) == {"fiji_east.jpg", "fiji_west.jpg"}
    assert len(names(cli(*search, "--near=-89.99,0,100"))) == 0  # near the pole: every longitude, no photo


def test_the_filter_is_shown_with_debug_and_bad_values_are_one_line(cli, indexed):
    run = cli("search", "a red circle", "--uri", indexed, "--camera", "pixel", "--after", "2023-06-01", "--debug")
    assert 'textimg: filter: taken >= 1685577600 and camera_key like "%pixel%"' in run.err
    for option, value, says in [("--after", "June", "--after takes a date as YYYY-MM-DD"),
                                ("--near", "48.8,north", "--near takes LAT,LON or LAT,LON,KM"),
                                ("--camera", "50%", "--camera takes a part of a camera's make or model")]:
        bad = cli("search", "a red circle", "--uri", indexed, option, value)
        assert bad.code == 1 and bad.last_err.startswith(f"textimg: error: {says}"), bad.err


def test_duplicates_take_the_photo_filters(cli, indexed):
    run = cli("duplicates", "--uri", indexed, "--camera", "pixel", "--threshold", "0.99")
    assert run.code == 0 and run.out.strip().splitlines()[-1].startswith("groups=1 images=2 rows=2 ")


def test_an_older_collection_is_still_searched_then_upgraded_keeping_its_vectors(cli, photos, tmp_path):
    from textimg_helpers.encoders import load_encoder
    from textimg_helpers.config import SHAPES_CHECKPOINT
    from textimg_helpers.data import label_for, list_image_paths, load_image
    from textimg_helpers.milvus import connect
    from textimg_helpers.store import path_id

    db, collection = tmp_path / "old.db", "textimg_shapes_clip"
    client = connect(str(db))
    create_older_collection(client, collection)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = load_encoder(str(SHAPES_CHECKPOINT), device="cpu")
    paths = list_image_paths(photos)
    embs = encoder.encode_images([load_image(p) for p in paths])
    client.insert(collection, [{"id": path_id(str(p)), "filepath": str(p), "label": label_for(p), "size": p.stat().st_size,
                                "mtime": p.stat().st_mtime_ns, "vector": e.tolist()} for p, e in zip(paths, embs)])
    hits = json.loads(cli("search", "a red circle", "--uri", db, "--json", "-k", "3").out)
    assert len(hits) == 3 and hits[0]["taken"] is None  # still searched, without metadata
    refused = cli("index", photos, "--uri", db, "-q")
    assert refused.code == 1 and "run the same textimg index with --upgrade once" in refused.last_err
    filtered = cli("search", "a red circle", "--uri", db, "--camera", "pixel")
    assert filtered.code == 1 and "--upgrade" in filtered.last_err
    upgraded = cli("index", photos, "--uri", db, "-q", "--upgrade")
    assert upgraded.summary == {"indexed": 0, "skipped": 0, "unchanged": 43, "total": 43}, upgraded.err
    rows = client.query(collection, filter="", output_fields=["vector", "filepath"], limit=100)
    before = {str(p): e for p, e in zip(paths, embs)}
    assert all(np.allclose(row["vector"], before[row["filepath"]], atol=1e-6) for row in rows)  # not encoded again
    assert set(names(cli("search", "a red circle", "--uri", db, "--camera", "pixel", "--json")))== {"paris_2023.jpg",
                                                                                                   "paris_2024.jpg"}
    client.close()


def test_the_panel_filters_by_date_and_camera_and_cuts_by_score(indexed):
    import datetime

    from textimg_helpers.config import SHAPES_CHECKPOINT
    from textimg_helpers.encoders import load_encoder
    from textimg_helpers.milvus import connect
    from textimg_helpers.widgets import SearchPanel

    client = connect(str(indexed))
    try:
        panel = SearchPanel(client, "textimg_shapes_clip", load_encoder(str(SHAPES_CHECKPOINT), device="cpu"), top_k=10)
        assert panel.camera.options == ("Canon EOS R6", "Google Pixel 7", "Google Pixel 8")  # to choose from
        panel.query.value = "a red circle"
        panel.camera.value = "Pixel"
        panel.submit.click()
        assert {hit.filepath.rsplit("/", 1)[1] for hit in panel.hits} == {"paris_2023.jpg", "paris_2024.jpg"}
        panel.after.value = datetime.date(2024, 1, 1)
        panel.submit.click()
        assert [hit.filepath.rsplit("/", 1)[1] for hit in panel.hits] == ["paris_2024.jpg"]
        panel.camera.value, panel.after.value, panel.min_score.value = "", None, 1.0
        panel.submit.click()
        assert panel.hits == [] and "no results with a score of at least 1" in panel.status.value
        panel.camera.value = "50%"
        panel.submit.click()
        assert "--camera takes a part of a camera" in panel.status.value  # one red line, the hits kept
    finally:
        client.close()
