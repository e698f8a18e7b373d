"""The same CLI against a real Milvus server (the embedded Milvus 2.3 of the ``milvus`` package)."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import run_cli, shapes_folder


@pytest.fixture(scope="module")
def server_images(tmp_path_factory):
    """40 shapes images, one per class (``red_circle_0000.png``, ...)."""
    return shapes_folder(tmp_path_factory.mktemp("server-images"))


@pytest.fixture(scope="module")
def server_index(milvus_server, server_images, shapes_encoder):
    """``--uri``/``--collection`` options of a fresh collection, and the run that indexed it."""
    server = ("--uri", milvus_server, "--collection", f"textimg_test_{uuid.uuid4().hex[:8]}")
    return server, run_cli("index", server_images, *server, "-q")


def test_index_search_stats_round_trip(cli, server_index, server_images):
    server, first = server_index
    assert first.code == 0, first.err
    assert first.summary == {"indexed": 40, "skipped": 0, "unchanged": 0, "total": 40}

    hits = json.loads(cli("search", "a red circle", *server, "-k", 100, "--json").out)
    assert len(hits) == 40  # every row is visible right after ingestion (Strong consistency)
    assert len({hit["label"] for hit in hits}) == 40  # one label per class, from the file names

    again = cli("index", server_images, *server, "-q")
    assert again.summary == {"indexed": 0, "skipped": 0, "unchanged": 40, "total": 40}  # no duplicates

    stats = cli("stats", *server)
    assert stats.code == 0 and stats.out.strip() == "rows=40 model=shapes-clip dim=128"


def test_filters_on_the_server(cli, server_index, server_images):
    server, _ = server_index
    prefix = cli("search", "a shape", *server, "-k", 100, "--where", f'filepath like "{server_images}/red_%"')
    assert prefix.code == 0, prefix.err
    paths = [line.split("  ", 1)[1] for line in prefix.out.splitlines()]
    assert len(paths) == 5 and all("/red_" in path for path in paths)

    infix = cli("search", "a shape", *server, "--where", 'filepath like "%circle%"')
    assert infix.code == 1 and infix.out == ""
    assert "Traceback" not in infix.err
    assert len(infix.err.strip().splitlines()) == 1
    assert infix.last_err.startswith("textimg: error: Milvus refused the search with filter "
                                     "'filepath like \"%circle%\"'")
    assert "prefix" in infix.last_err  # Milvus 2.3 says only prefix patterns (ab%) are supported


def test_similar_on_the_server(cli, server_index, server_images):
    server, _ = server_index
    example = server_images / "blue_star_0000.png"
    run = cli("similar", example, *server, "-k", 3)
    assert run.code == 0, run.err
    score, path = run.out.splitlines()[0].split("  ", 1)
    assert path == str(example) and float(score) == pytest.approx(1.0, abs=1e-3)
    assert len(run.out.splitlines()) == 3


def test_deleted_files_leave_the_server_collection_too(cli, milvus_server, tmp_path, shapes_encoder):
    folder = shapes_folder(tmp_path / "photos")
    server = ("--uri", milvus_server, "--collection", f"textimg_test_{uuid.uuid4().hex[:8]}")
    assert cli("index", folder, *server, "-q").summary["total"] == 40
    for path in sorted(folder.iterdir())[:4]:
        path.unlink()
    again = cli("index", folder, *server, "-q")
    assert again.summary == {"indexed": 0, "skipped": 0, "unchanged": 36, "total": 36}, again.err
    assert "removed 4 rows of files no longer in the folder or no longer readable" in again.out.splitlines()
    hits = json.loads(cli("search", "a shape", *server, "-k", 100, "--json").out)
    assert sorted(hit["filepath"] for hit in hits) == sorted(str(p) for p in folder.iterdir())
