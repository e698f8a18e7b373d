"""The service process of one Lite file: ``python -m textimg_helpers.service.process DB --idle SECONDS``.

It opens the file in Milvus Lite's server binary on a Unix socket of this user's private folder, holds
the engine lock inside the folder that replaces Milvus Lite's lock file (so no second engine opens the
file), publishes its state, and serves until no client has been connected for ``--idle`` seconds, its
file was deleted or replaced, its binary died, or it gets SIGTERM (``textimg serve --stop``). Clients
start it with ``client.spawn_service``; they never import this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from ..config import Settings, TextimgError, resolved_path
from .files import (CHECK_EVERY, START_TIMEOUT, cannot_write, engine_lock, fcntl, file_id, file_writable,
                    lite_file_in_use, lite_in_use_message, lite_lock_file, lite_server_class, load_state,
                    process_start_time, socket_answers, socket_path, state_file)

__all__ = ["main"]

log = logging.getLogger(__name__)


def _binary_of(db: Path, socket: Path):
    """Milvus Lite's ``Server`` for ``db`` (it checks the file name), used only for its public ``init``,
    ``milvus_bin`` and ``log_level``: never started nor stopped, and its ``__del__``, which stops it and
    so would try to remove its lock path (the folder of ``take_lock_path``), does nothing."""

    class Binary(lite_server_class()):
        def __del__(self):
            pass

    return Binary(str(db), address=f"unix:{socket}")


class _LiteServer:
    """Milvus Lite's server binary on a Unix socket of ``run_dir``, holding the engine lock inside the
    folder that replaces Milvus Lite's lock file; the binary exits once that lock is released, so it
    stops when this process goes (kill -9 too).

    milvus_lite's ``Server`` offers no public way to give its binary both an address and a lock path,
    nor to reach the process it starts (only its private ``_p``, ``_db_file``, ``_lock_path``): so this
    class starts the binary itself, as ``Server.start`` does, from ``Server``'s public ``init``,
    ``milvus_bin`` and ``log_level``, and keeps its own process, lock descriptor and paths."""

    def __init__(self, db: Path):
        self.db, self.socket, self.lock = db, socket_path(db), engine_lock(db)
        self.file: list[int] | None = None  # the identity of the file it opened (``file_id``)
        self.process: subprocess.Popen | None = None
        self.lock_fd: int | None = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a dead service's socket
        self.lite = _binary_of(db, self.socket)


    def start(self) -> None:
        take_lock_path(self.db)
        if not (self.lite.init() and self.launch()):
            raise TextimgError(f"Milvus Lite could not open {self.db}: it may be in use or damaged")
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_answers(self.socket, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TextimgError("Milvus Lite's server exited while starting")
            time.sleep(0.05)

    def launch(self) -> bool:
        """Take the engine lock and start the binary on it; False (logged, as Milvus Lite logs it) when
        the lock is held or the binary exits within half a second."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self.lock_fd = os.open(self.lock, flags, 0o644)
        try:
            fcntl.lockf(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.error("Open %s failed, the file has been opened by another program", self.db)
            return False
        libs = f"{Path(self.lite.milvus_bin).parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"
        args = [self.lite.milvus_bin, str(self.db), f"unix:{self.socket}", self.lite.log_level, str(self.lock)]
        self.process = subprocess.Popen(args, cwd=str(self.db.parent),
                                        env={**os.environ, "LD_LIBRARY_PATH": libs, "DYLD_LIBRARY_PATH": libs})
        try:
            self.process.wait(0.5)
        except subprocess.TimeoutExpired:
            return True
        log.error("Start milvus-lite failed")
        return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def clients(self) -> int:
        """Client connections open right now (the socket's own listening entry is not one)."""
        try:
            conns = psutil.Process(self.process.pid).net_connections(kind="unix")
        except (psutil.Error, AttributeError):
            return 0
        return max(0, sum(1 for c in conns if c.laddr == str(self.socket)) - 1)

    def stop(self) -> None:
        """Release the engine lock (the binary then exits), wait for the binary (killed after 2 s), and
        remove the socket, the lock and its folder (in a read-only folder they cannot be, and need not)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing it drops the lock
            self.lock_fd = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=3)
            self.process = None
        for remove in (self.socket.unlink, self.lock.unlink, lite_lock_file(self.db).rmdir):
            with contextlib.suppress(OSError):
                remove()  # the lock folder gone: the plain Milvus Lite lock path is free again


def take_lock_path(db: Path) -> None:
    """Make Milvus Lite's lock path ``.<file>.lock`` a folder (which a plain client can neither open nor
    delete), taking over a free lock file left there; another program holding it is refused."""
    guard = lite_lock_file(db)
    if guard.is_symlink():
        guard.unlink()
    elif guard.is_file():
        fd = os.open(guard, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the folder is in place
        except OSError:
            os.close(fd)
            raise TextimgError(lite_in_use_message(str(db))) from None
        try:
            guard.unlink()
            guard.mkdir(mode=0o755)
        finally:
            os.close(fd)
    guard.mkdir(mode=0o755, exist_ok=True)


def start_server(uri: str | os.PathLike) -> _LiteServer:
    """Open the Lite file in Milvus Lite's server on this user's private socket and publish the state."""
    db = resolved_path(uri)
    if lite_file_in_use(db):
        raise TextimgError(lite_in_use_message(str(uri)))
    server = _LiteServer(db)
    try:
        server.start()
        server.file = file_id(db)
        write_state(db, server, file_writable(db))
    except BaseException:
        server.stop()
        raise
    return server


def run_server(server: _LiteServer, idle: float | None = None, stop: threading.Event | None = None) -> None:
    """Serve until ``idle`` seconds pass with no client (never when ``None``), SIGTERM, Ctrl-C or
    ``stop``; then remove the state file and close the Lite file."""
    idle = idle if idle and idle > 0 else None
    stop = stop or threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        wait_while_used(server, idle, stop)
    finally:
        remove_state(server.db)
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def wait_while_used(server: _LiteServer, idle: float | None, stop: threading.Event) -> None:
    """Return when ``stop`` is set, Milvus Lite's server died, its file (or its folder) was deleted or
    replaced, or no client came for ``idle`` seconds. A state file removed or garbled is written again."""
    last_used = time.monotonic()
    while server.running and not stop.wait(CHECK_EVERY if idle is None else min(CHECK_EVERY, idle / 4)):
        if file_id(server.db) != server.file:
            print(time.strftime("%F %T"), f"{server.db} was deleted or replaced: stopping", flush=True)
            return
        state = load_state(server.db)
        if state is None or state["pid"] != os.getpid():
            with contextlib.suppress(TextimgError):
                write_state(server.db, server, file_writable(server.db))
        if idle is None:
            continue
        if server.clients():
            last_used = time.monotonic()
        elif time.monotonic() - last_used >= idle:
            return


def write_state(db: Path, server: _LiteServer, writable: bool = True) -> None:
    """Publish ``{pid, socket, started, db, file, writable}`` atomically (readers see a whole state or
    none), readable by this user only, never through a planted link."""
    state = {"pid": os.getpid(), "socket": str(server.socket), "started": process_start_time(os.getpid()),
             "db": str(db), "file": server.file, "writable": writable}
    tmp = state_file(db).with_suffix(f".{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(state))
        tmp.replace(state_file(db))
    except OSError as exc:
        raise TextimgError(cannot_write(tmp.parent, exc)) from None


def remove_state(db: Path) -> None:
    """Remove the state file if it is this process's (a newer service may have replaced it)."""
    with contextlib.suppress(OSError, ValueError, TextimgError):
        if json.loads(state_file(db).read_text()).get("pid") == os.getpid():
            state_file(db).unlink()


def main(argv: list[str] | None = None) -> int:
    """``python -m textimg_helpers.service.process DB --idle SECONDS``: the service process."""
    parser = argparse.ArgumentParser(prog="python -m textimg_helpers.service.process")
    parser.add_argument("db")
    parser.add_argument("--idle", type=float, default=Settings.service_idle)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only --stop (SIGTERM) or idleness end it
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        server = start_server(args.db)
        print(time.strftime("%F %T"), f"serving {server.db} at unix:{server.socket}", flush=True)
        run_server(server, args.idle)
    except TextimgError as exc:
        print(f"textimg service: error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
