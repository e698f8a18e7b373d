"""One Milvus Lite service per file, shared by every process of its user that names the file.

Milvus Lite lets one process open a file. So the first ``connect`` to a free Lite file starts a small
service process (its own session: it outlives the kernel or command that started it) that serves the
file on a Unix socket in a folder only its user can enter (``run_dir``: mode 0700; Milvus Lite has no
authentication, so no other user may reach it, and no TCP port is opened). That folder also holds the
service's state (``<key>.json``: pid, socket, the file's identity; mode 0600) and the lock that
serialises starters, so two processes starting at once get one service; nothing there can be planted by
another user. The service is found from its socket and its verified process as well as from its state:
a state that is missing, garbled or names another process neither locks anyone out nor makes ``stop``
signal another process.

One engine per file: beside the database, Milvus Lite's lock path ``.<file>.lock`` is made a folder
that holds the service's engine lock. Another program's plain ``MilvusClient("file.db")`` then fails
at once, and cannot delete that path and start a second engine on the file on its next try.

A service whose Milvus Lite binary died, or whose file was deleted or replaced, is stopped and replaced:
the file on disk is the truth. It also stops when no client has been connected for ``idle`` seconds
(``TEXTIMG_SERVICE_IDLE``, 60 by default) or on request (``textimg serve --stop``); a client whose
service went away starts or finds a new one on its next call (see ``milvus.ServiceClient``). Writes are
confirmed: Milvus Lite logs a write it could not make to the file (``Insert data failed``) without
telling the client, so clients read its log after each write (``write_failure``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
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

HOST = "127.0.0.1"  # where TCP servers of this package listen (``textimg app``), never another address
DEFAULT_IDLE = 60.0  # seconds without a connected client before the service stops
START_TIMEOUT = 60.0
CHECK_EVERY = 1.0
MAX_SOCKET_PATH = 100  # bytes: a Unix socket's path is limited to about 104 (macOS) or 108 (Linux)


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


# Where things are: the private folder of this user's services, and the files beside the database ----

def run_dir() -> Path:
    """This user's private folder for services (created mode 0700): ``$XDG_RUNTIME_DIR/textimg``, else
    ``<temp>/textimg-<uid>``. A folder there that is not a folder of this user's, only this user's, is
    never used (another user may have made it first)."""
    candidates = [Path(os.environ["XDG_RUNTIME_DIR"]) / "textimg"] if os.environ.get("XDG_RUNTIME_DIR") else []
    candidates.append(Path(tempfile.gettempdir()) / f"textimg-{os.getuid()}")
    problems = []
    for folder in candidates:
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                problems.append(f"{folder} is not a folder of this user's")
                continue
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(folder, 0o700)
            if len(str(folder)) + 22 <= MAX_SOCKET_PATH:
                return folder
            problems.append(f"{folder} is too long a path for a socket")
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
    raise TextimgError("no private folder for the Milvus Lite service: " + "; ".join(problems))


def service_key(db: Path) -> str:
    """A short name for the service of ``db`` in ``run_dir`` (socket paths are limited to ~100 bytes)."""
    return hashlib.blake2b(str(db).encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def socket_path(db: Path, pid: int | None = None) -> Path:
    """The socket of the service process ``pid`` (this one by default) of ``db``: one per process, so
    that a dying service's Milvus, which removes its socket as it exits, never removes its successor's."""
    return run_dir() / f"{service_key(db)}.{os.getpid() if pid is None else pid}.sock"


def state_file(db: Path) -> Path:
    return run_dir() / f"{service_key(db)}.json"


def log_file(db: Path) -> Path:
    """Where Milvus Lite writes its own messages: ``.<file>.log`` beside the database."""
    return db.with_name(f".{db.name}.log")


def lite_lock_file(db: Path) -> Path:
    """Milvus Lite's lock path: a file held by the process that has the database open, or, while this
    package's service serves it, a folder holding the service's engine lock (``engine_lock``)."""
    return db.with_name(f".{db.name}.lock")


def engine_lock(db: Path) -> Path:
    return lite_lock_file(db) / "engine"


def service_uri(state: dict) -> str:
    """The address a ``MilvusClient`` of this user takes: ``unix:<socket>``."""
    return f"unix:{state['socket']}"


def open_log(db: Path) -> int:
    """A descriptor appending to the log beside ``db``, opened without following a symbolic link (one
    planted there is removed, never written through); the caller closes it."""
    path, flags = log_file(db), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise TextimgError(cannot_write(db.parent, exc)) from None
    path.unlink()  # a symbolic link: removed, its target left alone
    return os.open(path, flags | os.O_EXCL, 0o600)


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
    """True when another process holds the lock of ``db``: Milvus Lite's own (another program opened the
    file) or a service's engine lock (another user's service). Never call it from a process that holds
    the lock itself: closing any handle on a lock file drops a process's POSIX locks."""
    guard = lite_lock_file(db)
    lock = engine_lock(db) if guard.is_dir() else guard
    if fcntl is None or not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except PermissionError:
        return True  # another user's lock
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# Finding the service: its state, checked against its process, its socket and the file -----------------

def read_state(db: Path) -> dict | None:
    """The state of the service of ``db`` if it is alive, answers and serves the file that is there now,
    else ``None`` (no state or a garbled one, or a stale one: its process is gone or is not this file's
    service, its Milvus died, or the file it serves was deleted or replaced since)."""
    state = load_state(db)
    if state is None or process_start_time(state["pid"]) != state["started"] or not is_service(state["pid"], db):
        return None
    if state.get("file") != file_id(db) or not socket_answers(state["socket"]):
        return None
    return state


def load_state(db: Path) -> dict | None:
    """The state file of ``db`` as written, or ``None`` when it is missing or garbled."""
    try:
        state = json.loads(state_file(db).read_text())
        state["pid"], state["started"], state["socket"] = int(state["pid"]), float(state["started"]), str(state["socket"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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


def is_service_of(cmdline: list[str], db: Path | None = None) -> bool:
    """True for the command line of a service (``python -m textimg_helpers.service DB ...``), of ``db``."""
    if "textimg_helpers.service" not in cmdline:
        return False
    i = cmdline.index("textimg_helpers.service")
    return db is None or cmdline[i + 1:i + 2] == [str(db)]


def is_service(pid: int, db: Path) -> bool:
    """True when process ``pid`` is this user's service of ``db`` (its command line names the file)."""
    try:
        proc = psutil.Process(pid)
        return proc.uids().real == os.getuid() and is_service_of(proc.cmdline(), db)
    except psutil.Error:
        return False


def services_of(db: Path | None = None) -> list[psutil.Process]:
    """This user's live service processes of ``db`` (of any file without it), told by their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "uids"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.info["uids"].real == os.getuid() and proc.info["status"] != psutil.STATUS_ZOMBIE \
                    and is_service_of(proc.info["cmdline"] or [], db) and proc.pid != os.getpid():
                found.append(proc)
    return found


def retire_services(db: Path, timeout: float = 15.0) -> None:
    """Stop the services of ``db`` that no longer serve it, and wait until they are gone (they hold its
    lock until then). Called only when no service of ``db`` answers for its file: one whose Milvus died
    is still closing, one whose file was deleted or replaced still serves what is gone."""
    terminate(services_of(db), timeout)


def terminate(procs: list[psutil.Process], timeout: float = 15.0) -> None:
    """SIGTERM to each of ``procs``, then wait for them (killed after ``timeout``); our children are reaped."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for proc in procs:
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


def socket_answers(path: str | os.PathLike, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            return True
    except OSError:
        return False


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
    path = run_dir() / f"{service_key(db)}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
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
    finally:
        os.close(fd)


# Starting it -------------------------------------------------------------------------------------

def ensure_service(uri: str | os.PathLike, idle: float | None = None) -> str:
    """The ``unix:<socket>`` of the service of this Lite file, started if none answers."""
    return service_uri(ensure_state(uri, idle))


def ensure_state(uri: str | os.PathLike, idle: float | None = None) -> dict:
    """The state of the service of this Lite file (``socket``, ``pid``, ``file``...), started if none answers."""
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
        state = read_state(db) or healed_state(db)
        if state is None:
            state, _ = spawn_service(db, uri, idle)
    return state


def healed_state(db: Path) -> dict | None:
    """The state of a service of ``db`` that runs while its state file is missing or garbled: it writes
    it again within ``CHECK_EVERY`` (``None`` when no service of ``db`` runs, or none does that)."""
    if not services_of(db):
        return None
    deadline = time.monotonic() + 2.5 * CHECK_EVERY
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if (state := read_state(db)) is not None:
            return state
    return None


def spawn_service(db: Path, uri, idle: float | None, detach: bool = True) -> tuple[dict, subprocess.Popen]:
    """Start the service of ``db`` in a process (of its own session with ``detach``) and wait until it
    answers (start lock held); a service of ``db`` that does not answer for its file is stopped first."""
    retire_services(db)
    if lite_file_in_use(db):  # held by something that is not our service (ours were retired)
        raise TextimgError(lite_in_use_message(str(uri)))
    idle = default_idle() if idle is None else idle
    command = [sys.executable, "-m", "textimg_helpers.service", str(db), "--idle", str(idle)]
    log = open_log(db)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=detach, cwd=str(db.parent), env=service_env())
    finally:
        os.close(log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(db)
        if state is not None and state["pid"] == child.pid:
            return state, child
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
    """Seconds a service waits for a client before it stops: ``TEXTIMG_SERVICE_IDLE``, else 60."""
    return Settings.from_env().service_idle


# Stopping it -------------------------------------------------------------------------------------

def stop_service(uri: str | os.PathLike, timeout: float = 10.0) -> dict | None:
    """Stop the service of this Lite file, found from its state or, when that is missing or garbled, from
    its process (only a process whose command line names the file is signalled); returns its state
    (``{"pid", "socket"}`` at least), or ``None`` when none was running."""
    db = db_path(uri)
    procs = services_of(db)
    if not procs:
        return None
    state = read_state(db) or {"pid": procs[0].pid, "socket": str(socket_path(db, procs[0].pid))}
    terminate(procs, timeout)
    return state


def stop_services_under(folder: str | os.PathLike) -> list[Path]:
    """Stop every service of this user whose file lies under ``folder`` (tests clean up with it);
    returns the files."""
    prefixes = {str(Path(folder)) + os.sep, str(Path(folder).resolve()) + os.sep}
    stopped = {}
    for proc in services_of():
        with contextlib.suppress(psutil.Error, ValueError, IndexError):
            cmdline = proc.cmdline()
            db = cmdline[cmdline.index("textimg_helpers.service") + 1]
            if db.startswith(tuple(prefixes)):
                stopped.setdefault(Path(db), []).append(proc)
    terminate([proc for procs in stopped.values() for proc in procs])
    return list(stopped)


# The service process -------------------------------------------------------------------------

class _LiteServer:
    """Milvus Lite's server on a Unix socket of ``run_dir`` that stops when this process goes (kill -9
    too), holding the engine lock inside the folder that replaces Milvus Lite's lock file."""

    def __init__(self, db: Path):
        guard = lite_lock_file(db)

        class Server_(lite_server_class()):
            @property
            def args(self):  # Milvus Lite's binary exits once the lock it is given is released
                return [self.milvus_bin, self._db_file, self._address, self.log_level, self._lock_path]

            def stop(self):  # it removes its lock file last: in a read-only folder it cannot, and need not
                with contextlib.suppress(OSError):
                    super().stop()
                with contextlib.suppress(OSError):
                    guard.rmdir()  # the plain Milvus Lite lock path is free again

        self.db, self.socket = db, socket_path(db)
        self.file: list[int] | None = None  # the identity of the file it opened (``file_id``)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a dead service's socket
        self.server = Server_(str(db), address=f"unix:{self.socket}")
        self.server._lock_path = str(engine_lock(db))

    def start(self) -> None:
        take_lock_path(self.db)
        if not (self.server.init() and self.server.start()):
            raise TextimgError(f"Milvus Lite could not open {self.server._db_file}: it may be in use or damaged")
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_answers(self.socket, timeout=0.2):
            if self.server._p.poll() is not None or time.monotonic() > deadline:
                raise TextimgError("Milvus Lite's server exited while starting")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.server._p is not None and self.server._p.poll() is None

    def clients(self) -> int:
        """Client connections open right now (the socket's own listening entry is not one)."""
        try:
            conns = psutil.Process(self.server._p.pid).net_connections(kind="unix")
        except psutil.Error:
            return 0
        return max(0, sum(1 for c in conns if c.laddr == str(self.socket)) - 1)

    def stop(self) -> None:
        self.server.stop()
        with contextlib.suppress(OSError):
            self.socket.unlink()


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
    db = db_path(uri)
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
    """``python -m textimg_helpers.service DB --idle SECONDS``: the service process."""
    parser = argparse.ArgumentParser(prog="python -m textimg_helpers.service")
    parser.add_argument("db")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE)
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
