"""Milvus collections: the schema, writing and reading rows, and searching them by vector."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources
    warnings.simplefilter("ignore")
    from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, MilvusException, RRFRanker

from .config import TextimgError, resolved_path
from .data import photo_metadata, wall_clock
from .hits import Hit
from .milvus import pymilvus_errors_unlogged

__all__ = ["INDEX_PARAMS", "SEARCH_PARAMS", "SPARSE_FIELD", "TEXT_FIELD", "WORDS_PENDING", "camera_names", "check_collection", "check_filter", "each_page",
           "collection_info", "count_rows", "create_collection", "drop_collection", "fetch_file_stats",
           "file_metadata", "filter_refused", "folder_filter", "has_metadata", "has_words", "metadata_missing_message",
           "open_collection", "path_id", "rows_under", "search_by_vector", "search_by_words", "search_hybrid",
           "upgrade_collection", "upsert_rows"]

MAX_PATH = 4096
INDEX_PARAMS = {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 128}}
SEARCH_PARAMS = {"metric_type": "COSINE", "params": {"nprobe": 16}}
# The words read in a picture (``textimg index --ocr``): a text field Milvus' analyzer splits into words, and
# a BM25 function that Milvus itself runs on every row written, into a sparse vector searched by BM25.
TEXT_FIELD = "text"
SPARSE_FIELD = "text_sparse"
MAX_TEXT = 8192
WORDS_INDEX_PARAMS = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"}
WORDS_PENDING = "words_pending"  # a row copied into a collection with words, whose words are not read yet
RRF_K = 60  # reciprocal-rank fusion: a hit at rank r of one search adds 1 / (RRF_K + r) to its score
HYBRID_CANDIDATES = 100  # each search of a hybrid search ranks at least this many, so that fusion sees both lists
MAX_TOP_K = 16384  # Milvus' limit for one search
# A filter is refused before Milvus parses it when it is longer or nested deeper than this (about 60 KB
# of nested parentheses crashed the Milvus Lite binary, and with it every client of a shared file).
MAX_FILTER_CHARS, MAX_FILTER_DEPTH, SHOWN_FILTER_CHARS = 8192, 100, 200  # 8192: above MAX_PATH


def shown_filter(filter: str) -> str:
    """A filter as an error message quotes it: its first ``SHOWN_FILTER_CHARS`` characters."""
    if len(filter) <= SHOWN_FILTER_CHARS:
        return repr(filter)
    return f"{filter[:SHOWN_FILTER_CHARS]!r}... ({len(filter):,} characters)"


def filter_depth(filter: str) -> int:
    """How deeply parentheses and brackets nest in ``filter`` (quotes not told apart: an upper bound)."""
    depth = deepest = 0
    for char in filter:
        depth += char in "([{"
        depth -= char in ")]}" and depth > 0
        deepest = max(deepest, depth)
    return deepest


def check_filter(filter: str) -> str:
    """``filter`` itself, or one ``TextimgError`` when it is too long or too deeply nested for Milvus."""
    if len(filter) > MAX_FILTER_CHARS:
        raise TextimgError(f"filter refused: {len(filter):,} characters, over the {MAX_FILTER_CHARS:,} allowed "
                           f"(it starts {filter[:SHOWN_FILTER_CHARS]!r}...)")
    if (depth := filter_depth(filter)) > MAX_FILTER_DEPTH:
        raise TextimgError(f"filter refused: parentheses nested {depth} deep, over the "
                           f"{MAX_FILTER_DEPTH} allowed: {shown_filter(filter)}")
    return filter


FIELDS = ("id", "filepath", "label", "size", "mtime", "taken", "camera_key", "lat", "lon", "width", "height")
META_FIELDS = ("taken", "taken_from", "camera", "lat", "lon", "width", "height")  # in hits, when the row has them


def filter_refused(action: str, filter: str, exc: MilvusException) -> TextimgError:
    """One line for a filter Milvus refused (``action``: "the search", "to read the rows") that says what a
    filter may test (Milvus' own words say little: ``1 == 1`` gives "... result should be ColumnVector")."""
    if not filter:
        return TextimgError(f"Milvus refused {action}: {exc.message}")
    if "ColumnVector" in exc.message:
        why = "it tests no field"
    else:
        why = exc.message.split(" at /")[0][:300]
    return TextimgError(f"Milvus refused {action} with filter {shown_filter(filter)}: {why}. A filter tests "
                        f"the fields {', '.join(FIELDS)}, e.g. label == \"red_circle\" or size > 100000; "
                        "leave it out to use every row")


def path_id(filepath: str) -> int:
    """A stable 63-bit primary key for a file path (the same path always gets the same id)."""
    return int.from_bytes(hashlib.blake2b(filepath.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big") >> 1


def create_collection(client: MilvusClient, collection_name: str, dim: int, model: str, words: bool = False) -> None:
    """Create the collection with an explicit schema, or check that the existing one matches; with
    ``words``, a new one also gets the fields of the words read in the pictures (``add_words``)."""
    if client.has_collection(collection_name):
        check_collection(client, collection_name, model, dim)
        return
    # dynamic fields: a row may hold more keys than these fields, such as what a photo says about itself
    # (data.photo_metadata: taken, camera, lat, lon...), which filters such as --after and --camera test
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True,
                                        description=json.dumps({"model": model, "dim": dim}))
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("filepath", DataType.VARCHAR, max_length=MAX_PATH)
    schema.add_field("label", DataType.VARCHAR, max_length=512)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", **INDEX_PARAMS)
    if words:
        add_words(schema, index_params)
    try:
        client.create_collection(collection_name, schema=schema, index_params=index_params,
                                 consistency_level="Strong")
    except MilvusException as exc:
        if not words:
            raise
        if client.has_collection(collection_name):  # made, then its index refused (Milvus 2.3): not half made
            client.drop_collection(collection_name)
        raise TextimgError(f"Milvus refused a collection with the words' fields (full-text search needs Milvus "
                           f"2.5 or later, or Milvus Lite 2.5): {exc.message}") from None


def add_words(schema, index_params) -> None:
    """The fields of a picture's words: ``text`` (analyzed: split into lower-case words) and the BM25
    function that fills ``text_sparse`` from it, indexed for full-text search."""
    schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True)
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                 input_field_names=[TEXT_FIELD], output_field_names=[SPARSE_FIELD]))
    index_params.add_index(field_name=SPARSE_FIELD, **WORDS_INDEX_PARAMS)


def has_words(client: MilvusClient, collection_name: str) -> bool:
    """True when the collection stores the words read in its pictures (made or upgraded with ``--ocr``)."""
    fields = client.describe_collection(collection_name)["fields"]
    return any(f["name"] == TEXT_FIELD for f in fields)


def collection_info(client: MilvusClient, collection_name: str) -> dict:
    """``{"model": ..., "dim": ...}`` remembered by a collection; errors if it does not exist."""
    if not client.has_collection(collection_name):
        known = ", ".join(client.list_collections()) or "none"
        raise TextimgError(f"no collection named {collection_name!r} (existing: {known}); "
                           "index a folder first: textimg index FOLDER")
    desc = client.describe_collection(collection_name)
    try:
        info = json.loads(desc.get("description") or "{}")
    except ValueError:
        info = {}
    vector = [f for f in desc["fields"] if f["type"] == DataType.FLOAT_VECTOR]
    dim = int(vector[0]["params"]["dim"]) if vector else None
    return {"model": info.get("model", "unknown"), "dim": dim}


def check_collection(client: MilvusClient, collection_name: str, model: str, dim: int | None = None) -> None:
    """Refuse to mix models: stop when the collection was built with another model or dim."""
    info = collection_info(client, collection_name)
    if info["model"] != model or (dim is not None and info["dim"] != dim):
        raise model_mismatch(collection_name, info, f"not {model}" + (f" (dim {dim})" if dim else ""),
                             "use another collection name")


def model_mismatch(collection_name: str, info: dict, instead: str, fix: str) -> TextimgError:
    """"collection X was built with model M (dim D), <instead>: <fix> (--collection) or rebuild it"."""
    return TextimgError(f"collection {collection_name!r} was built with model {info['model']} (dim {info['dim']}), "
                        f"{instead}: {fix} (--collection) or rebuild it (textimg drop, then index again)")


def has_metadata(client: MilvusClient, collection_name: str) -> bool:
    """True when the collection can store photo metadata (``taken``, ``camera``...: dynamic fields)."""
    return bool(client.describe_collection(collection_name).get("enable_dynamic_field"))


def metadata_missing_message(collection_name: str) -> str:
    return (f"collection {collection_name!r} was made before photos' dates, cameras and places were stored: "
            "run the same textimg index with --upgrade once (it keeps the vectors and reads the metadata from "
            "the files: nothing is encoded again)")


def upgrade_collection(client: MilvusClient, collection_name: str, progress: bool = True, words: bool = False) -> int:
    """Give an old collection the metadata fields (and, with ``words``, the fields of the words in its
    pictures), keeping its vectors: its rows are copied to a temporary collection, the collection made
    again with the new schema, and the rows written back with the metadata read from their files (a
    file no longer there keeps its stored mtime as ``taken``); a row without words gets an empty text
    and ``words_pending``, for ``index --ocr`` to read them. Returns the rows copied."""
    info = collection_info(client, collection_name)
    temporary = f"{collection_name}_upgrading"
    if not client.has_collection(temporary):  # a previous upgrade interrupted after the copy keeps it
        words = words or has_words(client, collection_name)
        rows = read_all(client, collection_name)
        create_collection(client, temporary, info["dim"], info["model"], words)
        for start in range(0, len(rows), 1000):
            part = [{**row, **file_metadata(row), **words_of(row, words)} for row in rows[start:start + 1000]]
            client.insert(temporary, part)
        client.drop_collection(collection_name)
    rows = read_all(client, temporary)
    create_collection(client, collection_name, info["dim"], info["model"], has_words(client, temporary))
    for start in range(0, len(rows), 1000):
        client.insert(collection_name, rows[start:start + 1000])
    client.drop_collection(temporary)
    return len(rows)


def words_of(row: dict, words: bool) -> dict:
    """What a copied row needs in a collection with (``words``) or without the words' fields."""
    if not words or TEXT_FIELD in row:
        return {}
    return {TEXT_FIELD: "", WORDS_PENDING: 1}


def file_metadata(row: dict) -> dict:
    """The metadata keys of a row, from its file (or its stored mtime when the file is gone), with
    ``camera_key``, the camera in lower case, which ``--camera`` matches."""
    try:
        meta = photo_metadata(row["filepath"], row.get("mtime"))
    except OSError:
        meta = {"taken": wall_clock(datetime.datetime.fromtimestamp(row.get("mtime", 0) / 1e9)),
                "taken_from": "mtime", "camera": "", "width": 0, "height": 0, "digest": ""}
    return {**meta, "camera_key": meta["camera"].lower()}


def read_all(client: MilvusClient, collection_name: str) -> list[dict]:
    """Every row of the collection, every field (vectors included), read in pages of 1,000."""
    client.load_collection(collection_name)
    rows = []
    each_page(client, collection_name, lambda page: rows.extend(dict(row) for row in page))
    return rows


def each_page(client: MilvusClient, collection_name: str, take: Callable[[list[dict]], None], filter: str = "",
              output_fields: Sequence[str] = ("*",), batch_size: int = 1000) -> None:
    """Hand each page of the rows that ``filter`` keeps to ``take``, ``batch_size`` rows at a time
    (``query_iterator``, closed at the end, whatever ``take`` raises)."""
    with pymilvus_errors_unlogged():  # its iterator logs a warning about timestamps on Milvus Lite
        pages = client.query_iterator(collection_name, batch_size=batch_size, filter=filter,
                                      output_fields=list(output_fields))
        try:
            while page := pages.next():
                take(page)
        finally:
            pages.close()


def open_collection(client: MilvusClient, collection_name: str, model: str | None = None) -> dict:
    """Check a collection exists (and matches ``model``), load it for search; returns its info."""
    info = collection_info(client, collection_name)
    if model is not None:
        check_collection(client, collection_name, model)
    client.load_collection(collection_name)
    return info


def upsert_rows(client: MilvusClient, collection_name: str, rows: Sequence[dict]) -> None:
    """Write rows, replacing any with the same path (a plain insert would duplicate them)."""
    if rows:
        client.upsert(collection_name, list(rows))


def fetch_file_stats(client: MilvusClient, collection_name: str, ids: Sequence[int],
                     chunk: int = 1000) -> dict[int, tuple[int, int]]:
    """``{id: (size, mtime)}`` for those of ``ids`` already in the collection."""
    found = {}
    for start in range(0, len(ids), chunk):
        part = ",".join(str(i) for i in ids[start:start + chunk])
        rows = client.query(collection_name, filter=f"id in [{part}]", output_fields=["size", "mtime"])
        found.update({r["id"]: (r["size"], r["mtime"]) for r in rows})
    return found


def count_rows(client: MilvusClient, collection_name: str, filter: str = "") -> int:
    """Number of rows (matching ``filter``), counted with Strong consistency (exact right after a write)."""
    check_filter(filter)
    client.load_collection(collection_name)
    res = client.query(collection_name, filter=filter, output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


def folder_filter(folder: str | Path) -> str:
    """A filter that keeps every row under ``folder``, and maybe a few more: a plain prefix pattern,
    ``filepath like "<prefix>%"``, cut before any ``_ % \\ "`` of the path (wildcards or escapes in
    ``like``, and a Milvus 2.3 server accepts prefix patterns only). Keep rows by path where it matters."""
    prefix = re.split(r'[_%\\"]', str(resolved_path(folder)) + os.sep)[0]
    return f'filepath like "{prefix}%"'


CAMERAS_FROM = 16_384  # rows read for the list of cameras (Milvus' largest query)


def camera_names(client: MilvusClient, collection_name: str) -> list[str]:
    """The cameras of the collection's photos, sorted (the panel's camera choice), read from at most
    ``CAMERAS_FROM`` rows that name one; [] for a collection that stores no metadata."""
    if not client.has_collection(collection_name) or not has_metadata(client, collection_name):
        return []
    rows = client.query(collection_name, filter='camera_key != ""', output_fields=["camera"], limit=CAMERAS_FROM)
    return sorted({row["camera"] for row in rows if row.get("camera")}, key=str.lower)


def rows_under(client: MilvusClient, collection_name: str, folder: str | Path,
               output_fields: Sequence[str] = ("filepath",)) -> dict[int, dict]:
    """``{id: row}`` of every row whose file lies under ``folder`` (read in pages of 1,000)."""
    root, found = str(resolved_path(folder)) + os.sep, {}
    fields = list(dict.fromkeys(["filepath", *output_fields]))
    each_page(client, collection_name, lambda page: found.update(
        {row["id"]: row for row in page if row["filepath"].startswith(root)}), folder_filter(folder), fields)
    return found


def search_by_vector(client: MilvusClient, collection_name: str, vectors: np.ndarray,
                     top_k: int = 10, filter: str = "") -> list[list[Hit]]:
    """The ``top_k`` nearest rows for each query vector, best first."""
    vectors = query_vectors(vectors, top_k, filter)
    with search_errors(client, collection_name, filter, vectors):
        res = client.search(collection_name, data=vectors.tolist(), limit=min(top_k, MAX_TOP_K), anns_field="vector",
                            filter=filter or "", output_fields=hit_fields(client, collection_name),
                            search_params=SEARCH_PARAMS, consistency_level="Strong")
    return [[hit_of(h) for h in hits] for hits in res]


def search_by_words(client: MilvusClient, collection_name: str, query: str, top_k: int = 10,
                    filter: str = "") -> list[Hit]:
    """The ``top_k`` rows whose words best match ``query`` (Milvus' full-text search: BM25 on the words
    read in the pictures), best first; a row that holds none of the query's words is never returned.
    The score is BM25's (0 and up, not a cosine)."""
    query_vectors(np.zeros((1, 1)), top_k, filter)
    check_words(client, collection_name)
    with search_errors(client, collection_name, filter):
        res = client.search(collection_name, data=[query], anns_field=SPARSE_FIELD, limit=min(top_k, MAX_TOP_K),
                            filter=filter or "", output_fields=hit_fields(client, collection_name),
                            search_params={"metric_type": "BM25"}, consistency_level="Strong")
    return [hit_of(h) for h in res[0]]


def search_hybrid(client: MilvusClient, collection_name: str, query: str, vector: np.ndarray, top_k: int = 10,
                  filter: str = "") -> list[Hit]:
    """One Milvus ``hybrid_search``: the words (BM25 on ``query``) and the pictures (cosine to ``vector``),
    each ranking its ``HYBRID_CANDIDATES`` best (``top_k`` if more), fused by reciprocal rank
    (``RRFRanker``): a row's score is the sum of 1 / (60 + its rank) in each list it is in, so a row found
    by both comes first; the ``top_k`` best are returned."""
    vectors = query_vectors(vector, top_k, filter)
    check_words(client, collection_name)
    limit, candidates = min(top_k, MAX_TOP_K), min(max(top_k, HYBRID_CANDIDATES), MAX_TOP_K)
    requests = [AnnSearchRequest(data=[query], anns_field=SPARSE_FIELD, param={"metric_type": "BM25"},
                                 limit=candidates, expr=filter or ""),
                AnnSearchRequest(data=vectors.tolist(), anns_field="vector", param=SEARCH_PARAMS, limit=candidates,
                                 expr=filter or "")]
    with search_errors(client, collection_name, filter, vectors):
        res = client.hybrid_search(collection_name, requests, ranker=RRFRanker(RRF_K), limit=limit,
                                   output_fields=hit_fields(client, collection_name), consistency_level="Strong")
    return [hit_of(h) for h in res[0]]


def query_vectors(vectors: np.ndarray, top_k: int, filter: str) -> np.ndarray:
    """Check ``top_k`` and ``filter`` before a search; the query vectors as float32, shape (n, dim)."""
    if top_k <= 0:
        raise TextimgError(f"k must be at least 1, not {top_k}")
    check_filter(filter or "")
    return np.atleast_2d(np.asarray(vectors, dtype=np.float32))


def check_words(client: MilvusClient, collection_name: str) -> None:
    """One line when the collection holds no words to search."""
    if not has_words(client, collection_name):
        raise TextimgError(f"collection {collection_name!r} holds no words read from its pictures: index it "
                           "with --ocr (textimg index FOLDER --ocr), or search the pictures (--match image)")


def hit_fields(client: MilvusClient, collection_name: str) -> list[str]:
    """What a search returns of each row: path, label, the photo's metadata and words when stored."""
    desc = client.describe_collection(collection_name)
    words = any(f["name"] == TEXT_FIELD for f in desc["fields"])
    return ["filepath", "label", *(META_FIELDS if desc.get("enable_dynamic_field") else ()),
            *((TEXT_FIELD,) if words else ())]


@contextmanager
def search_errors(client: MilvusClient, collection_name: str, filter: str, vectors: np.ndarray | None = None):
    """Milvus' refusals of a search as one line each: a closed client, a query vector of another model,
    a filter it cannot use."""
    try:
        with pymilvus_errors_unlogged():
            yield
    except MilvusException as exc:
        if "should create connection first" in exc.message:  # the notebook's last cell closed it
            raise TextimgError("this Milvus client is closed: run the setup cell (or connect) again") from None
        if vectors is not None and "dimension" in exc.message.lower():  # a query from another model
            raise model_mismatch(collection_name, collection_info(client, collection_name),
                                 f"but the query vector has dim {vectors.shape[1]}",
                                 "use the collection of your model") from None
        raise filter_refused("the search", filter, exc) from None


def hit_of(found: dict) -> Hit:
    """A ``Hit`` from one of Milvus' search results (with the photo's metadata and words when stored)."""
    entity = found["entity"]
    return Hit(entity["filepath"], entity["label"], float(found["distance"]), int(found["id"]),
               {key: entity[key] for key in META_FIELDS if key in entity}, entity.get(TEXT_FIELD))


def drop_collection(client: MilvusClient, collection_name: str) -> None:
    """Delete a collection and its rows (only ever on an explicit request)."""
    collection_info(client, collection_name)
    client.drop_collection(collection_name)
