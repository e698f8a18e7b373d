"""One Milvus Lite service per file, shared by every process that names the file.

Milvus Lite lets one process open a file. So the first ``connect`` to a free Lite file starts a small
service process (its own session: it outlives the kernel or command that started it) that serves the
file over gRPC on 127.0.0.1 only (Milvus Lite has no authentication). Others find it through a state
file beside the database, ``.<file>.service.json`` (port, pid, the pid's start time, the file's
identity). Starting is serialised by a lock file, so two processes starting at once get one service.
A state whose process is gone (killed, a reboot), whose Milvus Lite binary died, or whose file was
deleted or replaced since it started is ignored, its process stopped, and a new service started: the
file on disk is the truth. Writes are confirmed: Milvus Lite logs a write it could not make to the file
(``Insert data failed``) without telling the client, so clients read its log after each write
(``write_failure``). The service stops by itself when no client has
been connected for ``idle`` seconds, or on request (``textimg serve --stop``); a client whose service
went away starts or finds a new one on its next call (see ``ServiceClient``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
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
    """The state of the service of ``db`` if it is alive, answers and serves the file that is there now,
    else ``None`` (no state, or a stale one: its process is gone, its pid now belongs to another process
    after a reboot, its Milvus died, or the file it serves was deleted or replaced since)."""
    try:
        state = json.loads(state_file(db).read_text())
        pid, port, started = int(state["pid"]), int(state["port"]), float(state["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if process_start_time(pid) != started or state.get("file") != file_id(db) or not port_open(port):
        return None
    return state


def file_id(db: Path) -> list[int] | None:
    """The identity of the file at ``db`` (device, inode), ``None`` when there is none: a file deleted,
    or replaced by another one (a copy, a restore from backup), has another identity or none."""
    try:
        st = os.stat(db)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def services_of(db: Path) -> list[psutil.Process]:
    """The live service processes of ``db`` (``python -m textimg_helpers.service DB ...``)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "textimg_helpers.service" in cmdline \
                and str(db) in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


def retire_services(db: Path, timeout: float = 15.0) -> None:
    """Stop the services of ``db`` that no longer serve it, and wait until they are gone (they hold
    Milvus Lite's lock until then). Called only when no service of ``db`` answers for its file: one whose
    Milvus died is still closing, one whose file was deleted or replaced still serves what is gone."""
    procs = services_of(db)
    for proc in procs:
        with contextlib.suppress(psutil.Error):  # another user's: its lock is then reported as in use
            proc.terminate()
    psutil.wait_procs(procs, timeout=timeout)
    for proc in procs:  # reap our own children (a service this process started)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)


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
    return service_uri(ensure_state(uri, idle))


def ensure_state(uri: str | os.PathLike, idle: float | None = None) -> dict:
    """The state of the service of this Lite file (``port``, ``pid``, ``file``...), started if none answers."""
    db = db_path(uri)
    check_lite_name(db)
    if (state := read_state(db)) is not None:
        return state
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextimgError(f"cannot create the folder of the Milvus Lite file {uri}: {exc.strerror or exc}") from None
    try:
        check_folder_writable(db)
    except TextimgError as exc:
        raise TextimgError(f"{exc}: Milvus Lite keeps its lock and log beside the file, so its folder must be "
                           "writable, even to search: make it writable, or copy the file to a writable folder") from None
    with start_lock(db):
        state = read_state(db)
        if state is None:
            retire_services(db)
            state = spawn_service(db, uri, idle)
    return state


def spawn_service(db: Path, uri, idle: float | None) -> dict:
    """Start the service of ``db`` in a process of its own and wait until it answers (start lock held)."""
    if lite_file_in_use(db):  # held by something that is not our service (ours were retired)
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


# Writes that reached the file: Milvus Lite logs a failed write without telling its client -----------

class WriteFailed(TextimgError):
    """Milvus Lite could not save rows to the file (read-only, disk full): writing again cannot help."""


WRITE_FAILED = re.compile(r"(?:Insert|Delete|Upsert) data failed, errs: (.*)")


def log_size(db: Path) -> int:
    """Where the service's log ends now: ``write_failure(db, since=log_size(db))`` reads what comes after."""
    try:
        return os.stat(log_file(db)).st_size
    except OSError:
        return 0


def write_failure(db: Path, since: int) -> str | None:
    """Milvus Lite's reason for the first write it could not make to the file since log offset ``since``
    (``unable to open database file``, ``database or disk is full``...), or ``None``."""
    try:
        with open(log_file(db), "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = WRITE_FAILED.search(text)
    return found.group(1).strip() if found else None


def cannot_write(path: Path, exc: OSError) -> str:
    """``cannot write to <path>: disk full`` or ``...: read-only (<why>)``."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"cannot write to {path}: disk full"
    return f"cannot write to {path}: read-only ({exc.strerror or exc})"


def check_folder_writable(db: Path, space: int = 0) -> None:
    """One ``TextimgError`` when no file can be made beside ``db``: its folder is read-only (a read-only
    mount, no permission, ``chattr +i``), or, with ``space``, its disk has not that many bytes free
    (a probe of that size, written and synced)."""
    probe = db.with_name(f".{db.name}.probe-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(probe, "wb") as out:
            if space:
                out.write(bytes(space))
                out.flush()
                os.fsync(out.fileno())
    except OSError as exc:
        raise TextimgError(cannot_write(db.parent, exc)) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_writable(db: Path) -> None:
    """One ``TextimgError`` naming the cause when Milvus Lite could not write ``db`` now: its folder is
    read-only or has not 64 KB free (``check_folder_writable``), or the file cannot be opened for writing."""
    check_folder_writable(db, space=65536)
    try:
        with open(db, "r+b"):
            pass
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TextimgError(cannot_write(db, exc)) from None


def file_writable(db: Path) -> bool:
    """True when ``db`` can be opened for writing (Milvus Lite opens a file it cannot write read-only,
    and keeps it so: its service must then be restarted once the file is writable)."""
    try:
        with open(db, "r+b"):
            return True
    except OSError:
        return False


def write_failed_message(db: Path, reason: str) -> str:
    """The one line for writes Milvus Lite could not make: the cause, and that nothing was lost that was saved."""
    try:
        check_writable(db)
        cause = (f"cannot write to {db}: disk full" if "full" in reason else f"cannot write to {db}")
        cause += f" (Milvus Lite: {reason})"
    except TextimgError as exc:
        cause = str(exc)
    return (f"{cause}: the last rows were not saved; the rows saved before are kept. Make it writable or free "
            "space, then run the same command again")


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

            def stop(self):  # it removes its lock file last: in a read-only folder it cannot, and need not
                with contextlib.suppress(OSError):
                    super().stop()

        self.db, self.port = db, port
        self.file: list[int] | None = None  # the identity of the file it opened (``file_id``)
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
        server.file = file_id(db)
        write_state(db, server.port, server.file, file_writable(db))
    except BaseException:
        server.stop()
        raise
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
    """Return when ``stop`` is set, Milvus Lite's server died, its file was deleted or replaced, or no
    client came for ``idle`` seconds."""
    last_used = time.monotonic()
    while server.running and not stop.wait(CHECK_EVERY if idle is None else min(CHECK_EVERY, idle / 4)):
        if file_id(server.db) != server.file:
            print(time.strftime("%F %T"), f"{server.db} was deleted or replaced: stopping", flush=True)
            return
        if idle is None:
            continue
        if server.clients():
            last_used = time.monotonic()
        elif time.monotonic() - last_used >= idle:
            return


def write_state(db: Path, port: int, file: list[int] | None, writable: bool = True) -> None:
    """Publish ``{pid, port, started, db, file, writable}`` atomically: readers see a whole state or none."""
    state = {"pid": os.getpid(), "port": port, "started": process_start_time(os.getpid()), "db": str(db),
             "file": file, "writable": writable}
    tmp = state_file(db).with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(state))
        tmp.replace(state_file(db))
    except OSError as exc:
        raise TextimgError(cannot_write(db.parent, exc)) from None


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
