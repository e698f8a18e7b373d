"""Input that cannot hang, crash or mislead: query files that are not regular files or take too long to
read, filters too long, too deep or testing no field, absurd weights, file names Milvus Lite refuses, an empty --uri, and file names with
control characters in plain-text output. Each ends in one ``textimg: error:`` line, fast."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from conftest import run_textimg, shapes_folder, square
from textimg_helpers import data
from textimg_helpers.search import parse_expression
from textimg_helpers.config import TextimgError


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo.jpg"
    os.mkfifo(path)
    return path


def test_a_fifo_as_a_query_image_is_refused_at_once_in_a_real_process(indexed, fifo):
    for argv in (("similar", fifo), ("search", "a red circle", "--plus", fifo)):
        run = run_textimg(*argv, "--uri", indexed.uri, timeout=120)  # a read of the FIFO would never return
        assert run.code == 1, (argv, run.out, run.err)
        assert run.last_err == f"textimg: error: cannot read image {fifo}: not a regular file (a FIFO)", run.err


def test_a_folder_or_a_device_as_a_query_image_is_refused(cli, indexed, tmp_path):
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    for path, kind in ((folder, "a folder"), (link, "a device")):
        run = cli("similar", path, "--uri", indexed.uri)
        assert (run.code, run.last_err) == (1, f"textimg: error: cannot read image {path}: not a regular file ({kind})")


def test_the_panel_and_app_syntax_refuse_a_fifo_without_blocking(fifo):
    outcome = []

    def parse():
        try:
            parse_expression(f"a circle + {fifo}")
        except TextimgError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=parse, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert outcome == [f"cannot read image {fifo}: not a regular file (a FIFO)"]


def test_a_query_image_that_takes_too_long_to_read_is_refused_on_time(tmp_path, monkeypatch):
    slow = tmp_path / "slow.png"
    square().save(slow)
    real_load = data.load_image

    def stalled(*args, **kwargs):  # a network share that stops answering in the middle of the file
        time.sleep(3)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(data, "load_image", stalled)
    start = time.monotonic()
    with pytest.raises(TextimgError, match=r"cannot read image .*slow\.png: no data after 0\.2 s"):
        data.read_query_image(slow, timeout=0.2)
    assert time.monotonic() - start < 2
    assert data.read_query_image(slow, timeout=10).size == (32, 32)  # a slow read within the limit is kept


def test_a_deeply_nested_filter_is_refused_before_milvus_and_the_service_lives_on(cli, indexed):
    deep = "(" * 30_000 + 'label == "red_circle"' + ")" * 30_000
    run = cli("search", "a red circle", "--where", deep, "--uri", indexed.uri)
    assert run.code == 1 and run.last_err.startswith("textimg: error: filter refused: 60,021 characters, over the 8,192 allowed"), run.err
    assert len(run.last_err) < 400  # the filter is quoted by its start only
    nested = "(" * 150 + 'label == "red_circle"' + ")" * 150
    run = cli("search", "a red circle", "--where", nested, "--uri", indexed.uri)
    assert run.code == 1 and "parentheses nested 150 deep, over the 100 allowed" in run.last_err, run.err
    after = cli("search", "a red circle", "-k", 3, "--where", 'label == "red_circle"', "--uri", indexed.uri)
    assert after.code == 0 and len(after.out.splitlines()) == 3, after.err


def test_a_filter_nested_within_the_limit_still_reaches_milvus(cli, indexed):
    nested = "(" * 20 + 'label == "red_circle"' + ")" * 20
    run = cli("search", "a red circle", "-k", 2, "--where", nested, "--uri", indexed.uri, "--json")
    assert run.code == 0 and [hit["label"] for hit in json.loads(run.out)] == ["red_circle"] * 2, run.err


@pytest.mark.parametrize("weight", ["9" * 40, "9" * 400, "101"])
def test_an_absurd_weight_is_refused_not_turned_into_no_results(cli, indexed, weight):
    run = cli("search", "a red circle", "--plus", f"{weight}:a blue square", "--uri", indexed.uri)
    assert run.code == 1 and "a weight is a positive number, at most 100" in run.last_err, run.err
    assert "invalid value" not in run.err and "no results" not in run.err


def test_an_empty_uri_is_refused_instead_of_meaning_the_default(cli, tmp_path):
    run = cli("index", shapes_folder(tmp_path / "images"), "--uri", "")
    assert run.code == 2 and "--uri is empty" in run.last_err, run.err


@pytest.mark.parametrize("name, why", [("my photos.db", "holds characters other than"),
                                       ("fotos-ñ.db", "holds characters other than"),
                                       ("a" * 40 + ".db", "is longer than 36 characters")])
def test_a_file_name_milvus_lite_refuses_is_named_with_the_fix(cli, tmp_path, name, why):
    run = cli("index", shapes_folder(tmp_path / "images"), "--uri", tmp_path / name, "-q")
    assert run.code == 1, run.err
    assert run.last_err.startswith(f"textimg: error: Milvus Lite cannot use the file name {name!r}: it {why}")
    assert "name the file like" in run.last_err and not (tmp_path / name).exists()


def test_control_characters_in_a_path_stay_on_one_escaped_line(cli, tmp_path):
    images = shapes_folder(tmp_path / "images")  # 40 images, one per class
    hostile = ["red\ncircle_0001.png", "red\x1b[31m_circle_0002.png", "red_\u202ecircle_0003.png",
               "red\\ncircle_0001.png"]  # a backslash and an n: not printed like the newline
    for name in hostile:
        os.link(images / "red_circle_0000.png", images / name)
    uri = tmp_path / "milvus.db"
    assert cli("index", images, "--uri", uri, "-q").code == 0
    plain = cli("search", "a red circle", "-k", 44, "--uri", uri)
    lines = plain.out.splitlines()
    assert plain.code == 0 and len(lines) == 44, plain.out  # one line per hit, whatever the names hold
    assert not any(char in plain.out for char in "\x1b\u202e")
    assert len({line.split("  ", 1)[1] for line in lines}) == 44  # no two paths print alike
    for escaped in ("red\\ncircle_0001.png", "red\\x1b[31m_circle_0002.png", "red_\\u202ecircle_0003.png",
                    "red\\\\ncircle_0001.png"):
        assert any(line.endswith(escaped) for line in lines), (escaped, lines)
    exact = cli("search", "a red circle", "-k", 44, "--uri", uri, "--json")
    assert set(hostile) <= {os.path.basename(hit["filepath"]) for hit in json.loads(exact.out)}


@pytest.mark.parametrize("setting, says", [("TEXTIMG_PROFILE=bogus", "TEXTIMG_PROFILE='bogus' is not one of auto"),
                                           ("TEXTIMG_SERVICE_IDLE=abc", "TEXTIMG_SERVICE_IDLE='abc' is not a number")])
def test_a_bad_setting_is_one_line_not_a_traceback(tmp_path, setting, says):
    key, value = setting.split("=")
    run = run_textimg("stats", "--uri", tmp_path / "milvus.db", env={key: value})
    assert run.code == 1 and run.last_err.startswith(f"textimg: error: {says}"), run.err
    assert "Traceback" not in run.err


@pytest.mark.parametrize("template", ["{}{}{}", "a {0} of {}", "a photo of a {label}"])
def test_a_template_that_cannot_format_one_label_is_refused_before_any_work(cli, tmp_path, template):
    images = shapes_folder(tmp_path / "images")
    run = cli("eval", images, "--template", template, "--uri", tmp_path / "milvus.db")
    assert run.code == 1 and "--template needs a {} where the label goes, once" in run.last_err, run.err
    assert "indexed=" not in run.out + run.err


def test_a_collection_name_milvus_refuses_is_named_with_one_it_takes(cli, indexed):
    run = cli("search", "a red circle", "--collection", "my photos", "--uri", indexed.uri)
    assert run.code == 1 and run.last_err.startswith("textimg: error: collection name 'my photos' is not allowed"), run.err
    assert run.last_err.endswith("e.g. 'my_photos'") and "MilvusException" not in run.err


def test_a_service_idle_of_zero_is_refused_not_taken_as_never(tmp_path):
    run = run_textimg("stats", "--uri", tmp_path / "milvus.db", env={"TEXTIMG_SERVICE_IDLE": "0"})
    assert run.code == 1 and "TEXTIMG_SERVICE_IDLE=0: give the seconds" in run.last_err, run.err


def test_a_filter_that_tests_no_field_says_what_a_filter_tests(cli, indexed):
    run = cli("search", "a red circle", "--where", "1 == 1", "--uri", indexed.uri)
    assert run.code == 1
    assert run.last_err == ("textimg: error: Milvus refused the search with filter '1 == 1': it tests no field. "
                            "A filter tests the fields id, filepath, label, size, mtime, taken, camera_key, lat, lon, width, "
                            "height, e.g. "
                            'label == "red_circle" or size > 100000; leave it out to use every row')
