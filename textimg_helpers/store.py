"""Milvus: the collection schema, writing rows, and searching them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources
    warnings.simplefilter("ignore")
    from pymilvus import DataType, MilvusClient, MilvusException

from .config import TextimgError

log = logging.getLogger(__name__)
MAX_PATH = 4096
INDEX_PARAMS = {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 128}}
SEARCH_PARAMS = {"metric_type": "COSINE", "params": {"nprobe": 16}}
MAX_TOP_K = 16384  # Milvus' limit for one search
_LITE_FILES_OPENED: set[str] = set()  # Milvus Lite files this process opened (and locks)


@dataclass
class Hit:
    """One search result."""

    filepath: str
    label: str
    score: float
    id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def is_lite(uri: str) -> bool:
    """True for a Milvus Lite file, False for a server URI (``http://...``)."""
    return not re.match(r"^[a-z]+://", uri)


def connect(uri: str, token: str = "") -> MilvusClient:
    """Open Milvus: a Lite file (created with its folder) or a server / Zilliz Cloud URI."""
    lite = is_lite(uri)
    if lite:
        try:
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TextimgError(f"cannot create the folder of the Milvus Lite file {uri}: {exc.strerror or exc}") from None
        if lite_file_in_use(uri):
            raise TextimgError(lite_in_use_message(uri))
    # Milvus Lite answers on a local socket: keepalive pings while idle (a long encode, a notebook left
    # open) only make its server send GOAWAY "too_many_pings", which grpc logs to stderr.
    options = {"grpc_options": {"grpc.keepalive_permit_without_calls": False}} if lite else {}
    try:
        with ctrl_c_spares_children(lite), children_write_to(lite_log(uri) if lite else None):
            client = MilvusClient(uri=uri, token=token or "", timeout=30, **options)
    except Exception as exc:  # pymilvus raises several types here
        raise TextimgError(explain_connect_error(uri, exc)) from None
    if lite:
        _LITE_FILES_OPENED.add(str(Path(uri).expanduser().resolve()))
    return client


@contextmanager
def pymilvus_errors_unlogged():
    """pymilvus logs every refused call with a traceback before raising; the error we raise from
    it says the same in one line, so a notebook shows that line and not a page of red. Left alone
    when pymilvus' debug logging is on (``textimg --debug``, or ``logging`` set up by the user)."""
    if logging.getLogger("pymilvus").isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("pymilvus", "pymilvus.decorators", "pymilvus.milvus_client")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def lite_log(uri: str) -> Path:
    """Where Milvus Lite's server writes its own messages: ``.<file>.log`` beside the database."""
    db = Path(uri).expanduser()
    return db.with_name(f".{db.name}.log")


@contextmanager
def children_write_to(log: Path | None):
    """Processes started inside write their stdout and stderr to ``log``, not to ours: Milvus Lite's
    server prints its errors (a bad filter, say) where they would mix with results (``--json``)."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@contextmanager
def ctrl_c_spares_children(active: bool = True):
    """Ignore Ctrl-C while Milvus Lite starts its server process, which keeps that setting: a Ctrl-C
    in the terminal then stops ingestion, but not the database that still has rows to write."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def explain_connect_error(uri: str, exc: Exception) -> str:
    """One readable line for a failed connection, with the fix (and never the token)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_lite(uri) and "Open local milvus failed" in text:
        return f"Milvus Lite could not open {uri}: it may be in use ({lite_in_use_message(uri)}) or damaged"
    return f"cannot connect to Milvus at {uri}: {text[:300]}"


def lite_in_use_message(uri: str) -> str:
    return (f"the Milvus Lite file {uri} is in use by another process (Milvus Lite allows one process "
            "per file): close the other notebook or command, or use another file or a server URI "
            "(--uri / TEXTIMG_MILVUS_URI)")


def lite_file_in_use(uri: str) -> bool:
    """True when another process holds Milvus Lite's lock on ``uri`` (the ``.<name>.lock`` beside it).

    Asked before connecting, because Milvus Lite 2.5 deletes that lock file when it fails to open a
    file in use. Never asked about a file this process opened: closing any handle on the lock file
    would drop this process's own lock (POSIX locks), which stops its Milvus Lite server."""
    try:
        import fcntl
    except ImportError:  # Windows: Milvus Lite 3 locks differently
        return False
    db = Path(uri).expanduser().resolve()
    lock = db.with_name(f".{db.name}.lock")
    if str(db) in _LITE_FILES_OPENED or not lock.is_file():
        return False
    with open(lock, "a") as fd:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


def path_id(filepath: str) -> int:
    """A stable 63-bit primary key for a file path (the same path always gets the same id)."""
    return int.from_bytes(hashlib.blake2b(filepath.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big") >> 1


def create_collection(client: MilvusClient, collection_name: str, dim: int, model: str) -> None:
    """Create the collection with an explicit schema, or check that the existing one matches."""
    if client.has_collection(collection_name):
        check_collection(client, collection_name, model, dim)
        return
    schema = MilvusClient.create_schema(auto_id=False, description=json.dumps({"model": model, "dim": dim}))
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("filepath", DataType.VARCHAR, max_length=MAX_PATH)
    schema.add_field("label", DataType.VARCHAR, max_length=512)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", **INDEX_PARAMS)
    client.create_collection(collection_name, schema=schema, index_params=index_params,
                             consistency_level="Strong")


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
        raise TextimgError(
            f"collection {collection_name!r} was built with model {info['model']} (dim {info['dim']}), "
            f"not {model}" + (f" (dim {dim})" if dim else "") + ": use another collection name "
            "(--collection) or rebuild it (textimg drop, then index again)")


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
    client.load_collection(collection_name)
    res = client.query(collection_name, filter=filter, output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


def folder_filter(folder: str | Path) -> str:
    """A filter that keeps every row under ``folder``, and maybe a few more: a plain prefix pattern,
    ``filepath like "<prefix>%"``, cut before any ``_ % \\ "`` of the path (wildcards or escapes in
    ``like``, and a Milvus 2.3 server accepts prefix patterns only). Keep rows by path where it matters."""
    from .data import folder_root

    prefix = re.split(r'[_%\\"]', str(folder_root(folder)) + os.sep)[0]
    return f'filepath like "{prefix}%"'


def rows_under(client: MilvusClient, collection_name: str, folder: str | Path,
               output_fields: Sequence[str] = ("filepath",)) -> dict[int, dict]:
    """``{id: row}`` of every row whose file lies under ``folder`` (read in pages of 1,000)."""
    from .data import folder_root

    root, found = str(folder_root(folder)) + os.sep, {}
    fields = list(dict.fromkeys(["filepath", *output_fields]))
    with pymilvus_errors_unlogged():  # its iterator logs a warning about timestamps on Milvus Lite
        pages = client.query_iterator(collection_name, batch_size=1000, filter=folder_filter(folder),
                                      output_fields=fields)
        try:
            while page := pages.next():
                found.update({row["id"]: row for row in page if row["filepath"].startswith(root)})
        finally:
            pages.close()
    return found


def search_by_vector(client: MilvusClient, collection_name: str, vectors: np.ndarray,
                     top_k: int = 10, filter: str = "") -> list[list[Hit]]:
    """The ``top_k`` nearest rows for each query vector, best first."""
    if top_k <= 0:
        raise TextimgError(f"k must be at least 1, not {top_k}")
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    try:
        with pymilvus_errors_unlogged():
            res = client.search(collection_name, data=vectors.tolist(), limit=min(top_k, MAX_TOP_K),
                                filter=filter or "", output_fields=["filepath", "label"],
                                search_params=SEARCH_PARAMS, consistency_level="Strong")
    except MilvusException as exc:
        if "should create connection first" in exc.message:  # the notebook's last cell closed it
            raise TextimgError("this Milvus client is closed: run the setup cell (or connect) again") from None
        if "dimension" in exc.message.lower():  # a query from another model than the collection's
            info = collection_info(client, collection_name)
            raise TextimgError(
                f"collection {collection_name!r} was built with model {info['model']} (dim {info['dim']}), "
                f"but the query vector has dim {vectors.shape[1]}: use the collection of your model "
                "(--collection) or rebuild it (textimg drop, then index again)") from None
        raise TextimgError(f"Milvus refused the search{' with filter ' + repr(filter) if filter else ''}: "
                           f"{exc.message}") from None
    return [[Hit(h["entity"]["filepath"], h["entity"]["label"], float(h["distance"]), int(h["id"]))
             for h in hits] for hits in res]


def search_by_text(client: MilvusClient, collection_name: str, encoder, query: str,
                   top_k: int = 10, filter: str = "", templates: Sequence[str] | None = None) -> list[Hit]:
    """Encode ``query`` with CLIP and return the ``top_k`` closest images, best first.

    ``templates`` (e.g. ``["a photo of a {}", "a drawing of a {}"]``) averages the query's vectors
    over several phrasings (prompt ensembling)."""
    from .encoders import encode_queries

    text_embs = encode_queries(encoder, [query], templates)
    return search_by_vector(client, collection_name, text_embs, top_k, filter)[0]


def drop_collection(client: MilvusClient, collection_name: str) -> None:
    """Delete a collection and its rows (only ever on an explicit request)."""
    collection_info(client, collection_name)
    client.drop_collection(collection_name)


def search_by_image(client: MilvusClient, collection_name: str, encoder, image_path: str,
                    top_k: int = 10, filter: str = "") -> list[Hit]:
    """"More like this": the ``top_k`` images closest to the one at ``image_path``."""
    from .data import load_image

    try:
        image = load_image(image_path, max_side=2 * encoder.model.visual.input_resolution)
    except FileNotFoundError:
        raise TextimgError(f"image not found: {image_path}") from None
    except Exception as exc:
        raise TextimgError(f"cannot read image {image_path}: {exc}") from None
    return search_by_vector(client, collection_name, encoder.encode_images([image]), top_k, filter)[0]
