"""One Milvus Lite service per file, shared by every process that names the file.

Milvus Lite lets one process open a file. So the first ``connect`` to a free Lite file starts a small
service process (its own session: it outlives the kernel or command that started it) that serves the
file over gRPC on 127.0.0.1 only (Milvus Lite has no authentication). Others find it through a state
file beside the database, ``.<file>.service.json`` (port, pid, the pid's start time). Starting is
serialised by a lock file, so two processes starting at once get one service. A state whose process
is gone (killed, a reboot) is ignored and replaced. The service stops by itself when no client has
been connected for ``idle`` seconds, or on request (``textimg serve --stop``); a client whose service
went away starts or finds a new one on its next call (see ``ServiceClient``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import psutil

from .config import Settings, TextimgError

try:
    import fcntl
except ImportError:  # Windows: Milvus Lite 3, no server to share
    fcntl = None

HOST = "127.0.0.1"  # never another address: Milvus Lite has no authentication
DEFAULT_IDLE = 1800.0  # seconds without a connected client before the service stops
START_TIMEOUT = 60.0
CHECK_EVERY = 1.0


def available() -> bool:
    """True where Milvus Lite 2.5's server can be started here (Linux, macOS); Lite 3 (Windows) has none."""
    return fcntl is not None and lite_server_class() is not None


def lite_server_class():
    """Milvus Lite 2.5's ``Server`` class, or ``None`` where there is none. Imported on first use (only
    the service needs it), with the deprecation warning of its ``pkg_resources`` import silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            from milvus_lite.server import Server
        except ImportError:
            return None
    return Server


def db_path(uri: str | os.PathLike) -> Path:
    """The one spelling of a Milvus Lite file (absolute, links resolved)."""
    return Path(uri).expanduser().resolve()


def state_file(db: Path) -> Path:
    return db.with_name(f".{db.name}.service.json")


def log_file(db: Path) -> Path:
    """Where Milvus Lite writes its own messages: ``.<file>.log`` beside the database."""
    return db.with_name(f".{db.name}.log")


def lite_lock_file(db: Path) -> Path:
    """Milvus Lite's own lock, held by the process that has the file open."""
    return db.with_name(f".{db.name}.lock")


def service_uri(state: dict) -> str:
    return f"http://{HOST}:{state['port']}"


LITE_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,36}")  # the file names Milvus Lite 2.5 opens (milvus_lite/server.py)


def check_lite_name(db: Path) -> None:
    """Refuse, before anything starts, a file name Milvus Lite would refuse with a message only in its log."""
    if not LITE_NAME.fullmatch(db.name):
        why = "is longer than 36 characters" if len(db.name) > 36 else "holds characters other than a-z, A-Z, 0-9, ., - and _"
        safe = re.sub(r"[^a-zA-Z0-9.\-_]+", "_", db.stem)[:33] + ".db"
        raise TextimgError(f"Milvus Lite cannot use the file name {db.name!r}: it {why}; name the file "
                           f"like {safe!r} (the folder may have any name, e.g. one folder per collection)")


def lite_in_use_message(uri: str) -> str:
    return (f"the Milvus Lite file {uri} is in use by another process (Milvus Lite allows one process "
            "per file): close the other notebook or command, or use another file or a server URI "
            "(--uri / TEXTIMG_MILVUS_URI)")


def lite_file_in_use(db: Path) -> bool:
    """True when another process holds Milvus Lite's lock on ``db``. Never call it from a process that
    has the file open itself: closing any handle on the lock file drops a process's POSIX locks."""
    lock = lite_lock_file(db)
    if fcntl is None or not lock.is_file():
        return False
    with open(lock, "a") as fd:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


def read_state(db: Path) -> dict | None:
    """The state of the service of ``db`` if it is alive and answers, else ``None`` (no state, or a
    stale one: its process is gone, or its pid now belongs to another process after a reboot)."""
    try:
        state = json.loads(state_file(db).read_text())
        pid, port, started = int(state["pid"]), int(state["port"]), float(state["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if process_start_time(pid) != started or not port_open(port):
        return None
    return state


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` if there is no such process
    (a zombie, one that has exited but was not yet reaped by its parent, counts as gone: we reap it)."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            return process.create_time()
    except (psutil.Error, ValueError):
        return None
    with contextlib.suppress(ChildProcessError):  # our own child (the service this process started)
        os.waitpid(pid, os.WNOHANG)
    return None


def port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextmanager
def start_lock(db: Path, timeout: float = START_TIMEOUT):
    """Held while a process looks for the service of ``db`` and starts one: one starter at a time."""
    path = db.with_name(f".{db.name}.service.lock")
    with open(path, "a") as fd:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TextimgError(f"timed out waiting for another process starting the Milvus Lite "
                                       f"service of {db}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def ensure_service(uri: str | os.PathLike, idle: float | None = None) -> str:
    """The ``http://127.0.0.1:PORT`` of the service of this Lite file, started if none answers."""
    db = db_path(uri)
    check_lite_name(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextimgError(f"cannot create the folder of the Milvus Lite file {uri}: {exc.strerror or exc}") from None
    with start_lock(db):
        state = read_state(db)
        if state is None:
            state = spawn_service(db, uri, idle)
    return service_uri(state)


def spawn_service(db: Path, uri, idle: float | None) -> dict:
    """Start the service of ``db`` in a process of its own and wait until it answers (start lock held)."""
    if lite_file_in_use(db):  # held by something that is not our service
        raise TextimgError(lite_in_use_message(str(uri)))
    idle = default_idle() if idle is None else idle
    command = [sys.executable, "-m", "textimg_helpers.service", str(db), "--idle", str(idle)]
    with open(log_file(db), "ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, cwd=str(db.parent), env=service_env())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(db)
        if state is not None and state["pid"] == child.pid:
            return state
        if child.poll() is not None:
            break
        time.sleep(0.05)
    else:
        child.kill()
    raise TextimgError(f"the Milvus Lite service for {uri} did not start: {last_line(log_file(db))}")


def service_env() -> dict:
    """The service's environment: ours, with this package importable from where it was imported."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1][:300] if lines else f"no message (see {path})"


def default_idle() -> float:
    """Seconds a service waits for a client before it stops: ``TEXTIMG_SERVICE_IDLE``, else 30 minutes."""
    return Settings.from_env().service_idle


def stop_service(uri: str | os.PathLike, timeout: float = 10.0) -> dict | None:
    """Stop the service of this Lite file; returns its state, or ``None`` when none was running."""
    db = db_path(uri)
    state = read_state(db)
    if state is None:
        return None
    try:
        os.kill(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return state
    deadline = time.monotonic() + timeout
    while process_start_time(state["pid"]) == state["started"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def stop_services_under(folder: str | os.PathLike) -> list[Path]:
    """Stop every service whose file lies under ``folder`` (tests clean up with it); returns the files."""
    stopped = []
    for state in Path(folder).rglob(".*.service.json"):
        db = state.with_name(state.name[1:-len(".service.json")])
        if stop_service(db) is not None:
            stopped.append(db)
    return stopped


# The service process -------------------------------------------------------------------------

class _TcpLiteServer:
    """Milvus Lite's server on 127.0.0.1:PORT that stops when this process goes (kill -9 too)."""

    def __init__(self, db: Path, port: int):
        class Server_(lite_server_class()):
            @property
            def args(self):  # Milvus Lite's binary exits once the lock it is given is released
                return [self.milvus_bin, self._db_file, self._address, self.log_level, self._lock_path]

        self.db, self.port = db, port
        self.server = Server_(str(db), address=f"{HOST}:{port}")

    def start(self) -> None:
        if not (self.server.init() and self.server.start()):
            raise TextimgError(f"Milvus Lite could not open {self.server._db_file}: it may be in use or damaged")
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port, timeout=0.2):
            if self.server._p.poll() is not None or time.monotonic() > deadline:
                raise TextimgError("Milvus Lite's server exited while starting")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.server._p is not None and self.server._p.poll() is None

    def clients(self) -> int:
        """TCP connections from clients that are open right now."""
        try:
            conns = psutil.Process(self.server._p.pid).net_connections(kind="tcp")
        except psutil.Error:
            return 0
        return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.port)

    def stop(self) -> None:
        self.server.stop()


def start_server(uri: str | os.PathLike) -> _TcpLiteServer:
    """Open the Lite file in Milvus Lite's server on a free loopback port and publish the state file."""
    db = db_path(uri)
    if lite_file_in_use(db):
        raise TextimgError(lite_in_use_message(str(uri)))
    server = _TcpLiteServer(db, free_port())
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    write_state(db, server.port)
    return server


def run_server(server: _TcpLiteServer, idle: float | None = None, stop: threading.Event | None = None) -> None:
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


def wait_while_used(server: _TcpLiteServer, idle: float | None, stop: threading.Event) -> None:
    """Return when ``stop`` is set, Milvus Lite's server died, or no client came for ``idle`` seconds."""
    last_used = time.monotonic()
    while server.running and not stop.wait(CHECK_EVERY if idle is None else min(CHECK_EVERY, idle / 4)):
        if idle is None:
            continue
        if server.clients():
            last_used = time.monotonic()
        elif time.monotonic() - last_used >= idle:
            return


def write_state(db: Path, port: int) -> None:
    """Publish ``{pid, port, started, db}`` atomically: readers see a whole state or none."""
    state = {"pid": os.getpid(), "port": port, "started": process_start_time(os.getpid()), "db": str(db)}
    tmp = state_file(db).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_file(db))


def remove_state(db: Path) -> None:
    """Remove the state file if it is this process's (a newer service may have replaced it)."""
    try:
        if json.loads(state_file(db).read_text()).get("pid") == os.getpid():
            state_file(db).unlink()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m textimg_helpers.service DB --idle SECONDS``: the detached service process."""
    parser = argparse.ArgumentParser(prog="python -m textimg_helpers.service")
    parser.add_argument("db")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only --stop (SIGTERM) or idleness end it
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        server = start_server(args.db)
        print(time.strftime("%F %T"), f"serving {server.db} at http://{HOST}:{server.port}", flush=True)
        run_server(server, args.idle)
    except TextimgError as exc:
        print(f"textimg service: error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
