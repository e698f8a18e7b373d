"""What a user sees when something is wrong: one readable line, exit code 1, no traceback, the fix."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import time
import traceback

import pytest

from conftest import PYMILVUS_LEVELS, SHAPES_COLLECTION, run_cli, square
from textimg_helpers.config import Settings
from textimg_helpers.milvus import connect
from textimg_helpers.store import create_collection


def assert_error(run, *fragments, code: int = 1) -> None:
    """Exit ``code``, a last stderr line ``textimg: error: ...`` (``textimg search: error: ...`` for a bad
    argument, after the usage) holding every fragment, no traceback, nothing on stdout."""
    assert run.code == code, (run.out, run.err)
    assert "Traceback" not in run.err and run.out == ""
    assert re.match(r"textimg( \w+)?: error: ", run.last_err), run.err
    if code == 1:
        assert len(run.err.strip().splitlines()) == 1, run.err
    for fragment in fragments:
        assert fragment in run.last_err, (fragment, run.last_err)


@pytest.mark.parametrize("query", ["", "   \t "])
def test_empty_query(cli, indexed, query):
    uri, _ = indexed
    assert_error(cli("search", query, "--uri", uri), "the query is empty")


def test_long_query_is_truncated_with_a_warning(cli, indexed):
    uri, _ = indexed
    run = cli("search", "a big red circle on a grey background " * 12, "--uri", uri, "-k", 3)
    assert run.code == 0, run.err
    assert re.search(r"^textimg: warning: query has \d+ tokens; CLIP reads only the first 77", run.err, re.M)
    assert len(run.out.splitlines()) == 3


def test_k_larger_than_the_collection_returns_every_row(cli, indexed):
    uri, _ = indexed
    run = cli("search", "a red circle", "--uri", uri, "-k", 1000)
    assert run.code == 0 and len(run.out.splitlines()) == 120


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_must_be_positive(cli, indexed, k):
    uri, _ = indexed
    assert_error(cli("search", "a red circle", "--uri", uri, "-k", k), f"-k must be at least 1, not {k}",
                 code=2)


def test_unknown_collection(cli, indexed):
    uri, _ = indexed
    assert_error(cli("search", "a red circle", "--uri", uri, "--collection", "holiday_photos"),
                 "no collection named 'holiday_photos'", SHAPES_COLLECTION, "textimg index")
    assert_error(cli("stats", "--uri", uri, "--collection", "holiday_photos"), "no collection named")


def test_missing_folder_and_folder_without_images(cli, tmp_path):
    uri = str(tmp_path / "milvus.db")
    assert_error(cli("index", tmp_path / "no-such-folder", "--uri", uri),
                 f"folder not found: {tmp_path / 'no-such-folder'}")
    (tmp_path / "docs" / "album.jpg").mkdir(parents=True)  # a folder, not an image
    (tmp_path / "docs" / "notes.txt").write_text("no images here")
    assert_error(cli("index", tmp_path / "docs", "--uri", uri), f"no images in {tmp_path / 'docs'}")
    assert_error(cli("index", tmp_path / "docs" / "notes.txt", "--uri", uri), "not a folder")


def test_another_model_never_mixes_into_a_collection(cli, indexed):
    uri, images = indexed
    other = ("--uri", uri, "--collection", SHAPES_COLLECTION, "--random-weights")
    fix = "use another collection name (--collection) or rebuild it (textimg drop, then index again)"
    assert_error(cli("search", "a red circle", *other), "model shapes-clip (dim 128)", "not shapes-clip+random",
                 fix)
    assert_error(cli("index", images, *other, "-q"), "model shapes-clip", "not shapes-clip+random", fix)
    assert cli("stats", "--uri", uri).out.strip() == "rows=120 model=shapes-clip dim=128"  # untouched


def test_another_dimension_never_mixes_into_a_collection(cli, indexed):
    uri, images = indexed
    create_collection(connect(uri), "textimg_dim8", 8, "shapes-clip")  # same name, other size
    assert_error(cli("index", images, "--uri", uri, "--collection", "textimg_dim8", "-q"),
                 "(dim 8)", "(dim 128)", "--collection")
    assert_error(cli("search", "a red circle", "--uri", uri, "--collection", "textimg_dim8"), "dim 8", "128")
    stats = cli("stats", "--uri", uri, "--collection", "textimg_dim8")
    assert stats.out.strip() == "rows=0 model=shapes-clip dim=8"  # nothing written


def test_lite_file_held_by_another_process(cli, tmp_path):
    uri = tmp_path / "milvus.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
         "MilvusClient(sys.argv[1]); print('open', flush=True); time.sleep(60)", str(uri)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert_error(cli("stats", "--uri", uri), f"the Milvus Lite file {uri} is in use by another process",
                     "close the other notebook or command", "--uri")
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 15  # its server process notices the released lock and stops
    while "in use" in (run := cli("stats", "--uri", uri)).last_err and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_error(run, "no collection named")  # the file opens again


def test_token_never_shown(cli, indexed, monkeypatch, free_port):
    token = "root:Tok3n-S3cret-4242"
    monkeypatch.setenv("TEXTIMG_MILVUS_TOKEN", token)
    uri, images = indexed
    closed = f"http://127.0.0.1:{free_port}"
    runs = [cli("stats", "--uri", closed), cli("index", images, "--uri", closed),
            cli("search", "a red circle", "--uri", closed, "-k", 2),
            cli("stats", "--uri", uri), cli("search", "a red circle", "--uri", uri, "-k", 2)]
    assert [run.code for run in runs] == [1, 1, 1, 0, 0]
    assert runs[0].last_err.startswith(f"textimg: error: cannot connect to Milvus at {closed}")
    crashes = []  # with --debug the exception itself goes up, and pymilvus logs its failed calls
    with logs_captured() as records:
        for argv in (("stats", "--uri", closed), ("search", "a", "--uri", uri, "--where", "label ==")):
            with pytest.raises(Exception) as crash:
                run_cli(*argv, "--debug")
            crashes.append("".join(traceback.format_exception(crash.value)))
    assert records, "nothing was logged: the log check would be empty"
    shown = [run.out + run.err for run in runs] + records + crashes + [repr(Settings.from_env())]
    assert not [text for text in shown if token in text or "Tok3n" in text]
    assert Settings.from_env().milvus_token == token  # it was set, just never shown


def test_a_command_leaves_pymilvus_logging_as_it_found_it(cli, indexed, pymilvus_log):
    """The CLI hushes pymilvus while a command runs; a notebook or test that calls ``main`` afterwards
    still sees pymilvus' own messages."""
    uri, _ = indexed
    assert cli("stats", "--uri", uri).code == 0
    assert_error(cli("search", "a red circle", "--uri", uri, "--where", "label ==="), "Milvus refused the search")
    assert_error(cli("stats", "--uri", uri, "--collection", "holiday_photos"), "no collection named")
    levels = {name: logging.getLogger(name).level for name in PYMILVUS_LEVELS}
    assert levels == PYMILVUS_LEVELS and pymilvus_log == []
    logging.getLogger("pymilvus.decorators").error("pymilvus' own message")
    assert pymilvus_log == ["pymilvus.decorators ERROR: pymilvus' own message"]


@contextlib.contextmanager
def logs_captured():
    """Every log record (down to DEBUG) of textimg, pymilvus and the root logger, as formatted text."""
    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(handler.format(record))
    names = ("", "pymilvus", "pymilvus.milvus_client", "textimg_helpers")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture
def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_model_that_does_not_exist_is_named_before_anything_else(cli, indexed, tmp_path):
    uri, images = indexed
    for command in (("search", "a dog"), ("similar", images / "red_circle_0000.png"), ("index", images)):
        assert_error(cli(*command, "--uri", uri, "--model", tmp_path / "no_such_model.pt"),
                     f"model '{tmp_path / 'no_such_model.pt'}' is neither a CLIP name", "ViT-B/32")


def test_a_lite_file_whose_folder_cannot_exist(cli, tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    square().save(tmp_path / "red.png")
    assert_error(cli("index", tmp_path, "--uri", tmp_path / "afile" / "x.db"),
                 "cannot create the folder of the Milvus Lite file")


@pytest.mark.parametrize("command", [("stats",), ("search", "a dog"), ("drop", "--yes")])
def test_reading_a_lite_file_that_is_not_there_creates_nothing(cli, tmp_path, command):
    uri = tmp_path / "typo" / "milvus.db"
    assert_error(cli(*command, "--uri", uri), f"no Milvus Lite file at {uri}: index a folder first")
    assert not (tmp_path / "typo").exists()
