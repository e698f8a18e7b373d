"""Connecting to Milvus: a Milvus Lite file through its shared service, or a server / Zilliz Cloud URI."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import psutil

with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources
    warnings.simplefilter("ignore")
    from pymilvus import MilvusClient

from . import service
from .config import TextimgError

# keepalive pings while idle only make Milvus Lite send GOAWAY "too_many_pings", printed on stderr
NO_IDLE_PINGS = {"grpc.keepalive_permit_without_calls": False}
PYMILVUS_LOGGERS = ("pymilvus", "pymilvus.decorators", "pymilvus.milvus_client")


def is_lite(uri: str) -> bool:
    """True for a Milvus Lite file, False for a server URI (``http://...``)."""
    return not re.match(r"^[a-z]+://", str(uri))


def connect(uri: str, token: str = "", idle: float | None = None):
    """A ``MilvusClient`` for ``uri``: a Lite file (created with its folder, served to every process
    by its shared service, see ``service``) or a server / Zilliz Cloud URI."""
    if not is_lite(uri):
        return _client(uri, token=token or "")
    if service.available():
        return ServiceClient(uri, idle)
    return _connect_in_process(uri)


def shared_uri(uri: str, idle: float | None = None) -> str:
    """The address to give ``MilvusClient(uri=...)`` so that several processes use one database: for
    a Lite file, its shared service (``unix:<socket>``, started if none answers); a server URI,
    or a Lite file where the service cannot run (Windows), as it is."""
    if is_lite(uri) and service.available():
        return service.ensure_service(uri, idle)
    return uri


def _client(uri: str, *, shown_as: str | None = None, **options) -> MilvusClient:
    """``MilvusClient(uri)`` with a readable one-line error."""
    try:
        return MilvusClient(uri=uri, timeout=30, **options)
    except Exception as exc:  # pymilvus raises several types here
        raise TextimgError(explain_connect_error(shown_as or uri, exc)) from None


class ServiceClient:
    """A ``MilvusClient`` on the shared service of a Lite file (every method of ``MilvusClient``
    works on it). When the service went away (idle exit, killed, its Milvus died), a call starts or
    finds a new one and is made again, so a client held for hours (a notebook's panel) still answers.
    When the file was deleted or replaced, the next call goes to a new service of the file now there.
    A write (``insert``, ``upsert``, ``delete``) that Milvus Lite could not save to the file raises
    ``TextimgError`` naming the cause, and the service is restarted so that it serves what the file holds."""

    WRITES = frozenset({"insert", "upsert", "delete"})

    def __init__(self, uri: str, idle: float | None = None):
        self.uri, self.idle, self.db = uri, idle, service.db_path(uri)
        self._use(service.ensure_state(uri, idle))
        self.client = self._connect()

    def _use(self, state: dict) -> None:
        self.service_uri, self.file = service.service_uri(state), state.get("file")
        self.writable = state.get("writable", True)  # False: it opened the file read-only

    def _connect(self) -> MilvusClient:
        # dedicated: close() really closes the connection, so an idle service sees no client left
        return _client(self.service_uri, shown_as=self.uri, dedicated=True, grpc_options=NO_IDLE_PINGS)

    def __getattr__(self, name: str):
        method = getattr(self.client, name)
        if not callable(method):
            return method

        @functools.wraps(method)
        def call(*args, **kwargs):
            if service.file_id(self.db) != self.file:  # deleted or replaced: never answer from what is gone
                self.reconnect()
            since = service.log_size(self.db) if name in self.WRITES else None
            try:
                result = self._call(name, args, kwargs)
            except Exception:
                if since is not None:
                    self.check_written(since)
                raise
            if since is not None:
                self.check_written(since)
            return result
        return call

    def _call(self, name: str, args, kwargs):
        try:
            with pymilvus_errors_unlogged():
                return getattr(self.client, name)(*args, **kwargs)
        except Exception:
            if not self.reconnect():
                raise
        with pymilvus_errors_unlogged():
            return getattr(self.client, name)(*args, **kwargs)

    def check_written(self, since: int) -> None:
        """Raise when Milvus Lite logged a write it could not save since log offset ``since``; first stop
        the service, whose memory holds rows the file does not (the next call starts a new one)."""
        reason = service.write_failure(self.db, since)
        if reason is None:
            return
        service.stop_service(self.db)
        raise service.WriteFailed(service.write_failed_message(self.db, reason))

    def check_writable(self, restart: bool = False) -> None:
        """Raise, naming the cause, when the file or its folder cannot be written now (read-only, full).
        With ``restart`` (after writes, which then may not have reached the file), stop the service first."""
        try:
            service.check_writable(self.db)
        except TextimgError as exc:
            if not restart:
                raise
            service.stop_service(self.db)
            raise service.WriteFailed(f"{exc}: the last rows may not have been saved; the rows saved before "
                                      "are kept. Make it writable or free space, then run the same command again") from None
        if not self.writable:  # its service opened the file while it was read-only, and would refuse writes
            service.stop_service(self.db)
            self.reconnect()

    def reconnect(self) -> bool:
        """Connect to the file's service again if ours is gone or serves a file no longer there; False
        when it still answers for the file."""
        state = service.read_state(self.db)
        if state is not None and service.service_uri(state) == self.service_uri:
            return False
        self._use(service.ensure_state(self.uri, self.idle))
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


def set_pymilvus_levels(levels: int | list[int]) -> list[int]:
    """Set pymilvus' loggers to one level (or one each); returns the levels they had."""
    loggers = [logging.getLogger(name) for name in PYMILVUS_LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels if isinstance(levels, list) else [levels] * len(loggers)):
        logger.setLevel(level)
    return previous


@contextmanager
def pymilvus_log_level(level: int):
    """pymilvus' loggers at ``level`` inside the block, as they were after it (the CLI: everything
    with ``--debug``, else nothing, since our errors say the same in one line)."""
    previous = set_pymilvus_levels(level)
    try:
        yield
    finally:
        set_pymilvus_levels(previous)


_quiet_lock, _quiet = threading.Lock(), {"depth": 0, "levels": []}


@contextmanager
def pymilvus_errors_unlogged():
    """pymilvus logs every refused call with a traceback before raising; our errors say the same in
    one line, so a notebook shows that line and not a page of red. Left alone when pymilvus' debug
    logging is on (``textimg --debug``). Several threads may be inside at once: the first one in
    quietens the loggers, the last one out restores them."""
    if logging.getLogger("pymilvus").isEnabledFor(logging.DEBUG):
        yield
        return
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["levels"] = set_pymilvus_levels(logging.CRITICAL)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                set_pymilvus_levels(_quiet["levels"])


def explain_connect_error(uri: str, exc: Exception) -> str:
    """One readable line for a failed connection, with the fix (and never the token)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_lite(uri) and "Open local milvus failed" in text:
        return (f"Milvus Lite could not open {uri}: it may be in use "
                f"({service.lite_in_use_message(uri)}) or damaged")
    return f"cannot connect to Milvus at {uri}: {text[:300]}"


# Where the service cannot run (Milvus Lite 3 on Windows): the file is opened in this process -------

def _connect_in_process(uri: str) -> MilvusClient:
    """Milvus Lite inside this process: one process per file, as Milvus Lite itself allows."""
    db = Path(uri).expanduser()
    service.check_lite_name(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextimgError(f"cannot create the folder of the Milvus Lite file {uri}: {exc.strerror or exc}") from None
    lock = service.lite_lock_file(db.resolve())
    if not held_by_this_process(lock) and service.lite_file_in_use(db.resolve()):
        raise TextimgError(service.lite_in_use_message(uri))
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
        log = service.open_log(db)
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
