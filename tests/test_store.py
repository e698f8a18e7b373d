"""Milvus Lite round trip: schema, upsert, counting, search, model check."""

import numpy as np
import pytest
from pymilvus import MilvusException

from textimg_helpers.config import TextimgError
from textimg_helpers.milvus import connect
from textimg_helpers.store import (check_collection, collection_info, count_rows, create_collection, open_collection,
                                   path_id, search_by_vector, upsert_rows)


@pytest.fixture
def client(tmp_path):
    client = connect(str(tmp_path / "lite" / "milvus.db"))
    yield client
    client.close()


def _rows(n, dim=8, seed=0, prefix="/img"):
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [{"id": path_id(f"{prefix}/{i}.png"), "filepath": f"{prefix}/{i}.png", "label": f"l{i % 3}",
             "size": 1, "mtime": 1, "vector": v.tolist()} for i, v in enumerate(vectors)], vectors


def test_schema_remembers_model_and_dim(client):
    create_collection(client, "c", dim=8, model="toy")
    assert collection_info(client, "c") == {"model": "toy", "dim": 8}
    fields = {f["name"] for f in client.describe_collection("c")["fields"]}
    assert fields == {"id", "filepath", "label", "size", "mtime", "vector"}


def test_rows_are_visible_right_after_writing_and_upsert_never_duplicates(client):
    create_collection(client, "c", dim=8, model="toy")
    rows, vectors = _rows(50)
    upsert_rows(client, "c", rows)
    assert count_rows(client, "c") == 50
    upsert_rows(client, "c", rows[:20])  # the same paths again
    assert count_rows(client, "c") == 50
    hits = search_by_vector(client, "c", vectors[7], top_k=3)[0]
    assert hits[0].filepath == "/img/7.png" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filter_and_k_larger_than_the_collection(client):
    create_collection(client, "c", dim=8, model="toy")
    rows, vectors = _rows(30)
    upsert_rows(client, "c", rows)
    assert len(search_by_vector(client, "c", vectors[0], top_k=100)[0]) == 30
    only = search_by_vector(client, "c", vectors[0], top_k=100, filter='label == "l1"')[0]
    assert len(only) == 10 and {h.label for h in only} == {"l1"}
    with pytest.raises(TextimgError, match="k must be at least 1"):
        search_by_vector(client, "c", vectors[0], top_k=0)


def test_bad_filter_is_one_error_line_without_a_logged_traceback(client, pymilvus_log):
    create_collection(client, "c", dim=8, model="toy")
    rows, vectors = _rows(5)
    upsert_rows(client, "c", rows)
    with pytest.raises(MilvusException):  # pymilvus alone logs the refusal: the check below can see it
        client.client.search("c", data=[vectors[0].tolist()], limit=3, filter="label === 1")
    assert any("label === 1" in record for record in pymilvus_log), pymilvus_log
    pymilvus_log.clear()
    with pytest.raises(TextimgError, match=r"Milvus refused the search with filter 'label === 1'"):
        search_by_vector(client, "c", vectors[0], top_k=3, filter="label === 1")
    assert pymilvus_log == []


def test_reopening_a_file_keeps_the_rows(tmp_path):
    uri = str(tmp_path / "m.db")
    first = connect(uri)
    create_collection(first, "c", dim=8, model="toy")
    upsert_rows(first, "c", _rows(12)[0])
    first.close()
    again = connect(uri)
    assert open_collection(again, "c", "toy") == {"model": "toy", "dim": 8}
    assert count_rows(again, "c") == 12
    again.close()


def test_another_model_or_dim_is_refused_with_the_fix(client):
    create_collection(client, "c", dim=8, model="toy")
    with pytest.raises(TextimgError, match=r"built with model toy \(dim 8\), not other.*--collection.*rebuild"):
        check_collection(client, "c", "other")
    with pytest.raises(TextimgError, match="dim 8"):
        create_collection(client, "c", dim=16, model="toy")


def test_unknown_collection_names_what_exists(client):
    create_collection(client, "photos", dim=8, model="toy")
    with pytest.raises(TextimgError, match="no collection named 'nope' \\(existing: photos\\)"):
        open_collection(client, "nope")
