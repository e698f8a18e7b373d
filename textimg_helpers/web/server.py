"""``textimg app``: Voilà serving the search page (``app.APP_NOTEBOOK``) on 127.0.0.1, until Ctrl-C.

Voilà listens on the loopback address only: other machines cannot reach it (docs/app.md says how to
open it from another machine through SSH). Other users of this machine can, so the page asks for a
token, as Jupyter does: a new random one per run (or ``--token``), given in the address printed and
handed to Voilà in a config file only this user can read (a command line is visible to every user).
The kernel of a page closed or left without a connection is culled after ``cull_idle`` seconds, and
Voilà dies with ``textimg app`` even when that is killed with SIGKILL (Linux: ``PR_SET_PDEATHSIG``).
Voilà's own messages go to a temporary log; only its last line is shown, when it fails.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import HOST, TEXT_MODELS, TextimgError, free_port, host_reachable, last_line

__all__ = ["DEFAULT_PORT", "check_token", "check_voila", "page_env", "serve_app"]

DEFAULT_PORT = 8866  # Voilà's own default
START_TIMEOUT = 60.0
DEFAULT_CULL_IDLE = 300.0  # seconds a page's kernel lives on with no page connected to it


def check_voila() -> None:
    """Refuse to start without Voilà, with the command that installs it."""
    if importlib.util.find_spec("voila") is None:
        raise TextimgError('textimg app needs Voila, which is not installed: pip install "textimg-helpers[app]"')


def check_port(port: int) -> int:
    """``port`` if nothing listens on it on 127.0.0.1 (0: any free port); else a one-line error."""
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise TextimgError(f"port {port} is in use on {HOST} (another textimg app, Voila or Jupyter?): "
                               "pick another with --port N, or --port 0 for any free port") from None
    return port


def page_env(session) -> dict:
    """The environment of the page's kernel: the command's settings as ``TEXTIMG_*`` variables, and the
    folder it runs in. The kernel starts in the notebook's folder, inside the package, so every path among
    the settings (the data folder, a checkpoint, a text model's folder) is made absolute here, against
    the folder the command runs in; a Lite file keeps its spelling (the page shows it), ``explore`` reads it
    against ``TEXTIMG_APP_DIR``."""
    from .app import START_DIR

    settings = session.settings
    here = lambda path: os.path.abspath(os.path.expanduser(path))  # noqa: E731
    existing = lambda path: here(path) if Path(path).expanduser().exists() else path  # noqa: E731
    text_model = settings.text_model if settings.text_model in TEXT_MODELS else existing(settings.text_model)
    values = {"PROFILE": session.profile, "MODEL": existing(session.model),
              "MILVUS_URI": settings.uri,
              "DATA_DIR": here(settings.data_dir), "DEVICE": settings.device,
              "COLLECTION": session.collection_name, "TEXT_MODEL": text_model}
    if settings.cache is not None:  # a ``textimg download`` folder (--from)
        values["CACHE"] = here(settings.cache)
    return {**os.environ, **{f"TEXTIMG_{key}": value for key, value in values.items()}, START_DIR: os.getcwd()}


def voila_config(folder: Path, token: str, cull_idle: float) -> Path:
    """``voila.json`` in ``folder`` (private to this user): the token, and the culling of kernels that no
    page is connected to (a closed tab, a reload) after ``cull_idle`` seconds, checked every
    ``cull_idle / 2`` seconds (at most a minute apart)."""
    config = {"Voila": {"token": token},
              "MappingKernelManager": {"cull_idle_timeout": int(cull_idle), "cull_connected": False,
                                       "cull_interval": max(1, min(60, int(cull_idle // 2)))}}
    path = folder / "voila.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out)
    return path


def voila_command(port: int, config_dir: Path, debug: bool = False) -> list[str]:
    """Voilà on ``HOST:port`` exactly (no other port if it is taken), no browser opened, configured by
    the ``voila.json`` of ``config_dir`` only."""
    from .app import APP_NOTEBOOK

    return [sys.executable, "-m", "voila", str(APP_NOTEBOOK), f"--port={port}", f"--Voila.ip={HOST}",
            "--Voila.port_retries=0", "--no-browser", f"--Voila.config_file_paths=['{config_dir}']"] \
        + (["--debug"] if debug else [])


def die_with_parent() -> None:
    """In the child, before it runs Voilà: Linux sends it SIGTERM when ``textimg app`` dies, however it
    dies (a SIGKILL included), so Voilà never serves on without it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def start_voila(session, port: int, log, config_dir: Path, debug: bool = False) -> subprocess.Popen:
    """Start Voilà in a session of its own: Ctrl-C reaches only ``textimg app``, which then stops it."""
    return subprocess.Popen(voila_command(port, config_dir, debug), env=page_env(session), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=True,
                            preexec_fn=die_with_parent)


def wait_until_up(process: subprocess.Popen, port: int, log, timeout: float = START_TIMEOUT) -> None:
    """Return once Voilà accepts connections; a one-line error if it stops or takes too long."""
    deadline = time.monotonic() + timeout
    while not host_reachable(HOST, port, timeout=0.5):
        if process.poll() is not None:
            raise TextimgError(f"Voila stopped before serving (exit {process.returncode}): {log_last_line(log)}")
        if time.monotonic() > deadline:
            raise TextimgError(f"Voila did not serve on {HOST}:{port} within {timeout:g} s: {log_last_line(log)}")
        time.sleep(0.2)


def log_last_line(log) -> str:
    """The last non-empty line of Voilà's log (``--debug`` shows all of it)."""
    if log is None:
        return "see its messages above"
    log.flush()
    log.seek(0)
    return last_line(log.read().decode("utf-8", "replace")) or "no message"


def stop_voila(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM: Voilà shuts its kernels down and exits; killed if it has not within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def interrupt(_signum, _frame):
    raise KeyboardInterrupt


def check_token(token: str | None) -> str:
    """``token``, or a new random one; one that cannot go in an address as it is is refused."""
    if token is None:
        return secrets.token_hex(24)
    if not token or not all(c.isascii() and (c.isalnum() or c in "-_.~") for c in token):
        raise TextimgError("--token takes letters, digits and - _ . ~ (it goes in the page's address as it is)")
    return token


def serve_app(session, port: int = DEFAULT_PORT, debug: bool = False, announce=print, token: str | None = None,
              cull_idle: float = DEFAULT_CULL_IDLE) -> int:
    """Serve the page for ``session``'s settings until Ctrl-C (or SIGTERM); announce its address, with
    its token, once it is up. Voilà is stopped whichever way this ends."""
    check_voila()
    token, port = check_token(token), check_port(port)
    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops Voila too, not only this process
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory(prefix="textimg-app-") as config_dir:
        voila_config(Path(config_dir), token, cull_idle)
        process = start_voila(session, port, None if debug else log, Path(config_dir), debug)
        try:
            wait_until_up(process, port, None if debug else log)
            announce(f"serving http://{HOST}:{port}/?token={token} (Ctrl-C to stop)")
            code = process.wait()
            raise TextimgError(f"Voila stopped (exit {code}): {log_last_line(None if debug else log)}")
        except KeyboardInterrupt:
            return 0
        finally:
            stop_voila(process)
            signal.signal(signal.SIGTERM, previous)
