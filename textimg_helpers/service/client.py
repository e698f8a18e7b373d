"""Finding, starting and stopping the service of a Lite file, for its clients; and confirming writes.

A file's service is found from its socket and its verified process as well as from its state: a state
that is missing, garbled or names another process neither locks anyone out nor makes ``stop`` signal
another process. Starters take a lock in this user's private folder (``files.run_dir``), so two
processes starting at once get one service; nothing there can be planted by another user.

One engine per file: beside the database, Milvus Lite's lock path ``.<file>.lock`` is made a folder
that holds the service's engine lock. Another program's plain ``MilvusClient("file.db")`` then fails
at once, and cannot delete that path and start a second engine on the file on its next try.

A service whose Milvus Lite binary died, or whose file was deleted or replaced, is stopped and replaced:
the file on disk is the truth. It also stops when no client has been connected for ``idle`` seconds
(``TEXTIMG_SERVICE_IDLE``, 60 by default: ``config.Settings.service_idle``) or on request
(``textimg serve --stop``); a client whose service went away starts or finds a new one on its next call
(see ``milvus.ServiceClient``). Writes are confirmed: Milvus Lite logs a write it could not make to the
file (``Insert data failed``) without telling the client, so clients read its log after each write
(``write_failure``).

The service process itself is ``process``, started here as a command (``SERVICE_MODULE``), never imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from ..config import Settings, TextimgError, last_line, resolved_path
from .files import (CHECK_EVERY, START_TIMEOUT, cannot_write, fcntl, file_id, lite_file_in_use, lite_in_use_message,
                    load_state, log_file, open_log, process_start_time, socket_answers, socket_path,
                    start_lock_file)

__all__ = ["WriteFailed", "check_lite_name", "check_writable", "ensure_service", "ensure_state",
           "is_service_of", "log_size", "read_state", "service_uri", "services_of", "spawn_service",
           "start_lock", "stop_service", "stop_services_under", "terminate", "write_failed_message",
           "write_failure"]

SERVICE_MODULE = "textimg_helpers.service.process"  # ``python -m SERVICE_MODULE DB --idle SECONDS``
LITE_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,36}")  # the file names Milvus Lite 2.5 opens (milvus_lite/server.py)


def service_uri(state: dict) -> str:
    """The address a ``MilvusClient`` of this user takes: ``unix:<socket>``."""
    return f"unix:{state['socket']}"


def check_lite_name(db: Path) -> None:
    """Refuse, before anything starts, a file name Milvus Lite would refuse with a message only in its log."""
    if not LITE_NAME.fullmatch(db.name):
        why = "is longer than 36 characters" if len(db.name) > 36 else "holds characters other than a-z, A-Z, 0-9, ., - and _"
        safe = re.sub(r"[^a-zA-Z0-9.\-_]+", "_", db.stem)[:33] + ".db"
        raise TextimgError(f"Milvus Lite cannot use the file name {db.name!r}: it {why}; name the file "
                           f"like {safe!r} (the folder may have any name, e.g. one folder per collection)")


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


def is_service_of(cmdline: list[str], db: Path | None = None) -> bool:
    """True for the command line of a service (``python -m textimg_helpers.service.process DB ...``), of ``db``."""
    if SERVICE_MODULE not in cmdline:
        return False
    i = cmdline.index(SERVICE_MODULE)
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


@contextmanager
def start_lock(db: Path, timeout: float = START_TIMEOUT):
    """Held while a process looks for the service of ``db`` and starts one: one starter at a time."""
    fd = os.open(start_lock_file(db), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
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
    db = resolved_path(uri)
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
    answers (start lock held); a service of ``db`` that does not answer for its file is stopped first.
    ``idle``: seconds it waits for a client (``None``: ``TEXTIMG_SERVICE_IDLE``, read now; 0: never stops)."""
    retire_services(db)
    if lite_file_in_use(db):  # held by something that is not our service (ours were retired)
        raise TextimgError(lite_in_use_message(str(uri)))
    idle = Settings.from_env().service_idle if idle is None else idle
    command = [sys.executable, "-m", SERVICE_MODULE, str(db), "--idle", str(idle)]
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
    raise TextimgError(f"the Milvus Lite service for {uri} did not start: {log_tail(db)}")


def service_env() -> dict:
    """The service's environment: ours, with this package importable from where it was imported."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def log_tail(db: Path) -> str:
    """The last line of the log beside ``db`` (at most 300 characters), or where to look."""
    try:
        text = log_file(db).read_text(errors="replace")
    except OSError:
        text = ""
    return last_line(text)[:300] or f"no message (see {log_file(db)})"


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


# Stopping it -------------------------------------------------------------------------------------

def stop_service(uri: str | os.PathLike, timeout: float = 10.0) -> dict | None:
    """Stop the service of this Lite file, found from its state or, when that is missing or garbled, from
    its process (only a process whose command line names the file is signalled); returns its state
    (``{"pid", "socket"}`` at least), or ``None`` when none was running."""
    db = resolved_path(uri)
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
            db = cmdline[cmdline.index(SERVICE_MODULE) + 1]
            if db.startswith(tuple(prefixes)):
                stopped.setdefault(Path(db), []).append(proc)
    terminate([proc for procs in stopped.values() for proc in procs])
    return list(stopped)
