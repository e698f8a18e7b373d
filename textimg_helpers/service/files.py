"""Where a Lite file's service keeps its things, and what both its clients and its process read.

The private folder of this user's services (``run_dir``: mode 0700; Milvus Lite has no authentication,
so no other user may reach a service, and no TCP port is opened) holds, per file, the service's socket
(one per service process), its state (``<key>.json``: pid, socket, the file's identity; mode 0600) and
the lock that serialises starters. Beside the database: Milvus Lite's log ``.<file>.log`` and its lock
path ``.<file>.lock``, which a running service makes a folder holding its engine lock.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import stat
import tempfile
import warnings
from pathlib import Path

import psutil

from ..config import TextimgError

try:
    import fcntl
except ImportError:  # Windows: Milvus Lite 3, no server to share
    fcntl = None

__all__ = ["CHECK_EVERY", "START_TIMEOUT", "available", "cannot_write", "engine_lock", "file_id",
           "file_writable", "lite_file_in_use", "lite_in_use_message", "lite_lock_file", "lite_server_class",
           "load_state", "log_file", "open_log", "process_start_time", "socket_answers", "socket_path",
           "start_lock_file", "state_file"]

START_TIMEOUT = 60.0  # seconds a service may take to start
CHECK_EVERY = 1.0  # seconds between a service's checks of its file, its state and its clients
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


# The private folder of this user's services ------------------------------------------------------

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
    """The service's state: ``{pid, socket, started, db, file, writable}`` (written by the service)."""
    return run_dir() / f"{service_key(db)}.json"


def start_lock_file(db: Path) -> Path:
    """The lock held by a process that looks for the service of ``db`` and starts one."""
    return run_dir() / f"{service_key(db)}.lock"


# Beside the database ------------------------------------------------------------------------------

def log_file(db: Path) -> Path:
    """Where Milvus Lite writes its own messages: ``.<file>.log`` beside the database."""
    return db.with_name(f".{db.name}.log")


def lite_lock_file(db: Path) -> Path:
    """Milvus Lite's lock path: a file held by the process that has the database open, or, while this
    package's service serves it, a folder holding the service's engine lock (``engine_lock``)."""
    return db.with_name(f".{db.name}.lock")


def engine_lock(db: Path) -> Path:
    return lite_lock_file(db) / "engine"


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


def cannot_write(path: Path, exc: OSError) -> str:
    """``cannot write to <path>: disk full`` or ``...: read-only (<why>)``."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"cannot write to {path}: disk full"
    return f"cannot write to {path}: read-only ({exc.strerror or exc})"


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


def file_writable(db: Path) -> bool:
    """True when ``db`` can be opened for writing (Milvus Lite opens a file it cannot write read-only,
    and keeps it so: its service must then be restarted once the file is writable)."""
    try:
        with open(db, "r+b"):
            return True
    except OSError:
        return False


# What the service publishes, and the checks of it ------------------------------------------------

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
