"""Connecting to Milvus: a Milvus Lite file through its shared service, or a server / Zilliz Cloud URI.

``connect``, ``shared_uri`` and ``is_lite`` are the public face; ``ServiceClient`` is the client of a
Lite file's service (``service.client`` finds or starts it). pymilvus logs every refused call with a
traceback before raising: inside ``pymilvus_errors_unlogged`` (and the CLI's ``pymilvus_log_level``)
one filter on its loggers drops those records, in that context only (``PymilvusFloor``).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources
    warnings.simplefilter("ignore")
    from pymilvus import MilvusClient
    from pymilvus.milvus_client.index import IndexParams

from .config import TextimgError, first_line, resolved_path
from .service.client import (WriteFailed, check_lite_name, check_writable as check_file_writable, ensure_service,
                             ensure_state, log_size, read_state, service_uri, stop_service, write_failed_message,
                             write_failure)
from .service.files import available, file_id, lite_file_in_use, lite_in_use_message, lite_lock_file, open_log

__all__ = ["PYMILVUS_LOGGERS", "check_writable", "connect", "is_lite", "pymilvus_errors_unlogged",
           "pymilvus_log_level", "shared_uri"]

# keepalive pings while idle only make Milvus Lite send GOAWAY "too_many_pings", printed on stderr
NO_IDLE_PINGS = {"grpc.keepalive_permit_without_calls": False}
PYMILVUS_LOGGERS = ("pymilvus", "pymilvus.decorators", "pymilvus.milvus_client")  # those with handlers or levels


def is_lite(uri: str) -> bool:
    """True for a Milvus Lite file, False for a server URI (``http://...``)."""
    return not re.match(r"^[a-z]+://", str(uri))


def connect(uri: str, token: str = "", idle: float | None = None):
    """A ``MilvusClient`` for ``uri``: a Lite file (created with its folder, served to every process
    by its shared service, see ``service``) or a server / Zilliz Cloud URI."""
    if not is_lite(uri):
        return _client(uri, token=token or "")
    if available():
        return ServiceClient(uri, idle)
    return _connect_in_process(uri)


def shared_uri(uri: str, idle: float | None = None) -> str:
    """The address to give ``MilvusClient(uri=...)`` so that several processes use one database: for
    a Lite file, its shared service (``unix:<socket>``, started if none answers); a server URI,
    or a Lite file where the service cannot run (Windows), as it is."""
    if is_lite(uri) and available():
        return ensure_service(uri, idle)
    return uri


def _client(uri: str, *, shown_as: str | None = None, **options) -> MilvusClient:
    """``MilvusClient(uri)`` with a readable one-line error."""
    try:
        return MilvusClient(uri=uri, timeout=30, **options)
    except Exception as exc:  # pymilvus raises several types here
        raise TextimgError(explain_connect_error(shown_as or uri, exc)) from None


class ServiceClient:
    """A ``MilvusClient`` on the shared service of a Lite file, with the methods of ``MilvusClient``
    this project uses (each takes ``MilvusClient``'s arguments). When the file was deleted or replaced,
    the next call goes to a new service of the file now there. When the service went away (killed, its
    Milvus died), a call starts or finds a new one; a call that is safe to repeat is then made again
    once, so a client held for hours (a notebook's panel) still answers: reads (``search``, ``query``,
    ``query_iterator``, ``get``, ``describe_*``, ``has_collection``, ``list_collections``), ``upsert``
    (keyed by path: writing a row twice leaves one) and ``load_collection``, ``release_collection``,
    ``flush`` (they set a state). ``insert`` and ``delete`` are never repeated (a failed call may have
    been made: an insert twice is two rows), nor are ``create_*`` and ``drop_*`` (a repeat could undo or
    refuse what the first call, or another process since, made); they fail with the error.
    A write (``insert``, ``upsert``, ``delete``) that Milvus Lite could not save to the file raises
    ``TextimgError`` naming the cause, and the service is restarted so that it serves what the file holds."""

    def __init__(self, uri: str, idle: float | None = None):
        self.uri, self.idle, self.db = uri, idle, resolved_path(uri)
        self._use(ensure_state(uri, idle))
        self.client = self._connect()

    def _use(self, state: dict) -> None:
        self.service_uri, self.file = service_uri(state), state.get("file")
        self.writable = state.get("writable", True)  # False: it opened the file read-only

    def _connect(self) -> MilvusClient:
        # dedicated: close() really closes the connection, so an idle service sees no client left
        return _client(self.service_uri, shown_as=self.uri, dedicated=True, grpc_options=NO_IDLE_PINGS)

    # Reads, and calls that set a state: made again once on a new service ------------------------------

    def search(self, collection_name: str, data: list | None = None, **kwargs: Any) -> list[list[dict]]:
        return self._call("search", collection_name, data=data, repeat=True, **kwargs)

    def hybrid_search(self, collection_name: str, reqs: list, ranker: Any, **kwargs: Any) -> list[list[dict]]:
        return self._call("hybrid_search", collection_name, reqs=reqs, ranker=ranker, repeat=True, **kwargs)

    def query(self, collection_name: str, filter: str = "", **kwargs: Any) -> list[dict]:
        return self._call("query", collection_name, filter=filter, repeat=True, **kwargs)

    def query_iterator(self, collection_name: str, **kwargs: Any):
        """pymilvus' ``QueryIterator`` (``next()`` pages of rows, then ``close()``), on this call's service."""
        return self._call("query_iterator", collection_name, repeat=True, **kwargs)

    def get(self, collection_name: str, ids: list | str | int, **kwargs: Any) -> list[dict]:
        return self._call("get", collection_name, ids=ids, repeat=True, **kwargs)

    def describe_collection(self, collection_name: str, **kwargs: Any) -> dict:
        return self._call("describe_collection", collection_name, repeat=True, **kwargs)

    def describe_index(self, collection_name: str, index_name: str, **kwargs: Any) -> dict:
        return self._call("describe_index", collection_name, index_name=index_name, repeat=True, **kwargs)

    def has_collection(self, collection_name: str, **kwargs: Any) -> bool:
        return self._call("has_collection", collection_name, repeat=True, **kwargs)

    def list_collections(self, **kwargs: Any) -> list[str]:
        return self._call("list_collections", repeat=True, **kwargs)

    def load_collection(self, collection_name: str, **kwargs: Any) -> None:
        return self._call("load_collection", collection_name, repeat=True, **kwargs)

    def release_collection(self, collection_name: str, **kwargs: Any) -> None:
        return self._call("release_collection", collection_name, repeat=True, **kwargs)

    def flush(self, collection_name: str, **kwargs: Any) -> None:
        return self._call("flush", collection_name, repeat=True, **kwargs)

    def upsert(self, collection_name: str, data: dict | list[dict], **kwargs: Any) -> dict:
        return self._write("upsert", collection_name, data=data, repeat=True, **kwargs)

    # Never made twice ----------------------------------------------------------------------------

    def insert(self, collection_name: str, data: dict | list[dict], **kwargs: Any) -> dict:
        return self._write("insert", collection_name, data=data, repeat=False, **kwargs)

    def delete(self, collection_name: str, ids: list | str | int | None = None, **kwargs: Any) -> dict:
        return self._write("delete", collection_name, ids=ids, repeat=False, **kwargs)

    def create_collection(self, collection_name: str, dimension: int | None = None, **kwargs: Any) -> None:
        return self._call("create_collection", collection_name, dimension=dimension, repeat=False, **kwargs)

    def drop_collection(self, collection_name: str, **kwargs: Any) -> None:
        return self._call("drop_collection", collection_name, repeat=False, **kwargs)

    def create_index(self, collection_name: str, index_params: IndexParams, **kwargs: Any) -> None:
        return self._call("create_index", collection_name, index_params=index_params, repeat=False, **kwargs)

    def drop_index(self, collection_name: str, index_name: str, **kwargs: Any) -> None:
        return self._call("drop_index", collection_name, index_name=index_name, repeat=False, **kwargs)

    @staticmethod
    def prepare_index_params(field_name: str = "", **kwargs: Any) -> IndexParams:
        """``MilvusClient.prepare_index_params``: built here, nothing is sent."""
        return MilvusClient.prepare_index_params(field_name, **kwargs)

    # How calls are made ----------------------------------------------------------------------------

    def _write(self, name: str, *args: Any, repeat: bool, **kwargs: Any) -> dict:
        """A write, confirmed against the service's log (``check_written``), whether it failed or not."""
        since = log_size(self.db)
        try:
            return self._call(name, *args, repeat=repeat, **kwargs)
        finally:
            self.check_written(since)

    def _call(self, name: str, *args: Any, repeat: bool, **kwargs: Any):
        """``MilvusClient.<name>(*args, **kwargs)`` on the service of the file there now; when it fails
        because the service went away, on a new one: made again when ``repeat``, else its error raised."""
        if file_id(self.db) != self.file:  # deleted or replaced: never answer from what is gone
            self.reconnect()
        try:
            with pymilvus_errors_unlogged():
                return getattr(self.client, name)(*args, **kwargs)
        except Exception:
            if not self.reconnect() or not repeat:
                raise
        with pymilvus_errors_unlogged():
            return getattr(self.client, name)(*args, **kwargs)

    def check_written(self, since: int) -> None:
        """Raise when Milvus Lite logged a write it could not save since log offset ``since``; first stop
        the service, whose memory holds rows the file does not (the next call starts a new one)."""
        reason = write_failure(self.db, since)
        if reason is None:
            return
        stop_service(self.db)
        raise WriteFailed(write_failed_message(self.db, reason))

    def check_writable(self, restart: bool = False) -> None:
        """Raise, naming the cause, when the file or its folder cannot be written now (read-only, full).
        With ``restart`` (after writes, which then may not have reached the file), stop the service first."""
        try:
            check_file_writable(self.db)
        except TextimgError as exc:
            if not restart:
                raise
            stop_service(self.db)
            raise WriteFailed(f"{exc}: the last rows may not have been saved; the rows saved before "
                              "are kept. Make it writable or free space, then run the same command again") from None
        if not self.writable:  # its service opened the file while it was read-only, and would refuse writes
            stop_service(self.db)
            self.reconnect()

    def reconnect(self) -> bool:
        """Connect to the file's service again if ours is gone or serves a file no longer there; False
        when it still answers for the file."""
        state = read_state(self.db)
        if state is not None and service_uri(state) == self.service_uri:
            return False
        self._use(ensure_state(self.uri, self.idle))
        old, self.client = self.client, self._connect()
        with pymilvus_errors_unlogged(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old.close()
        return True

    def close(self) -> None:
        """Close this client's connection (the service stays for the other clients)."""
        self.client.close()

    def __repr__(self) -> str:
        return f"<MilvusClient for {self.uri}, shared Milvus Lite service at {self.service_uri}>"


def check_writable(client, after_writes: bool = False) -> None:
    """Raise ``TextimgError`` naming the cause when ``client``'s Lite file cannot be written now (its
    folder read-only or full, the file read-only); nothing for a server, which reports its own errors.
    ``after_writes``: the writes just made may not have reached the file, so its service is restarted
    (to serve what the file holds) before the error."""
    if isinstance(client, ServiceClient):
        client.check_writable(restart=after_writes)


# pymilvus' logging: one filter on its loggers, switched per context --------------------------------

_floor: contextvars.ContextVar[int | None] = contextvars.ContextVar("textimg_pymilvus_floor", default=None)


class PymilvusFloor(logging.Filter):
    """Drops pymilvus' records below the level set for the current context (``pymilvus_log_level``,
    ``pymilvus_errors_unlogged``); lets every record through where none is set. Its loggers' levels and
    handlers stay as pymilvus (or the user) set them, and other threads and tasks are not affected."""

    def filter(self, record: logging.LogRecord) -> bool:
        floor = _floor.get()
        return floor is None or record.levelno >= floor


PYMILVUS_FILTER = PymilvusFloor()


def install_pymilvus_filter() -> None:
    """Put ``PYMILVUS_FILTER`` on pymilvus' loggers, once each: those of ``PYMILVUS_LOGGERS`` and every
    ``pymilvus.*`` logger there is (a logger's filters see only its own records, not its children's)."""
    names = {*PYMILVUS_LOGGERS, *(name for name, logger in logging.root.manager.loggerDict.items()
                                  if name.startswith("pymilvus.") and isinstance(logger, logging.Logger))}
    for name in sorted(names):
        logger = logging.getLogger(name)
        if PYMILVUS_FILTER not in logger.filters:
            logger.addFilter(PYMILVUS_FILTER)


install_pymilvus_filter()


@contextmanager
def pymilvus_log_level(level: int):
    """Inside the block, in this context, pymilvus' records below ``level`` are dropped (the CLI: none
    with ``--debug``, all but critical ones else, since our errors say the same in one line)."""
    token = _floor.set(level)
    try:
        yield
    finally:
        _floor.reset(token)


@contextmanager
def pymilvus_errors_unlogged():
    """pymilvus logs every refused call with a traceback before raising; our errors say the same in
    one line, so a notebook shows that line and not a page of red. Left alone when pymilvus' debug
    logging is on (``textimg --debug``, or its logger set to DEBUG). Each thread or task has its own
    setting: one leaving the block never turns logging back on for another still inside."""
    floor = _floor.get()
    if (floor is not None and floor <= logging.DEBUG) or logging.getLogger("pymilvus").isEnabledFor(logging.DEBUG):
        yield
        return
    with pymilvus_log_level(logging.CRITICAL):
        yield


def explain_connect_error(uri: str, exc: Exception) -> str:
    """One readable line for a failed connection, with the fix (and never the token)."""
    text = first_line(exc) or type(exc).__name__
    if is_lite(uri) and "Open local milvus failed" in text:
        return (f"Milvus Lite could not open {uri}: it may be in use "
                f"({lite_in_use_message(uri)}) or damaged")
    return f"cannot connect to Milvus at {uri}: {text[:300]}"


# Where the service cannot run (Milvus Lite 3 on Windows): the file is opened in this process -------

def _connect_in_process(uri: str) -> MilvusClient:
    """Milvus Lite inside this process: one process per file, as Milvus Lite itself allows."""
    db = Path(uri).expanduser()
    check_lite_name(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextimgError(f"cannot create the folder of the Milvus Lite file {uri}: {exc.strerror or exc}") from None
    lock = lite_lock_file(db.resolve())
    if not held_by_this_process(lock) and lite_file_in_use(db.resolve()):
        raise TextimgError(lite_in_use_message(uri))
    with ctrl_c_spares_children(), children_write_to(db), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        return _client(uri, grpc_options=NO_IDLE_PINGS)


def held_by_this_process(path: Path) -> bool:
    """True when this process, or a process it started (Milvus Lite's server), has ``path`` open: a
    Lite file this process opened already, whose lock must not be tested (closing any handle on the
    lock file would drop this process's POSIX locks)."""
    me = psutil.Process()
    try:
        processes = [me, *me.children(recursive=True)]
        return any(f.path == str(path) for p in processes for f in p.open_files())
    except psutil.Error:
        return False


@contextmanager
def children_write_to(db: Path):
    """Processes started inside write their stdout and stderr to the log beside ``db``, not to ours
    (Milvus Lite's server prints its errors where they would mix with results, ``--json``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        log = open_log(db)
        try:
            os.dup2(log, 1)
            os.dup2(log, 2)
        finally:
            os.close(log)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@contextmanager
def ctrl_c_spares_children():
    """Ignore Ctrl-C while Milvus Lite starts its server process, which keeps that setting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
