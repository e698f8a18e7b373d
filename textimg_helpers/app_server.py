"""``textimg app``: Voilà serving the search page (``app.APP_NOTEBOOK``) on 127.0.0.1, until Ctrl-C.

The page has no login, so Voilà listens on the loopback address only: other machines cannot reach it
(docs/app.md says how to open it from another machine through SSH). Voilà's own
messages go to a temporary log; only its last line is shown, when it fails.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .config import TextimgError
from .service import HOST, free_port, port_open

DEFAULT_PORT = 8866  # Voilà's own default
START_TIMEOUT = 60.0


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
    folder it runs in (the kernel starts in the notebook's folder, inside the package)."""
    from .app import START_DIR

    settings = session.settings
    values = {"PROFILE": session.profile, "MODEL": session.model, "MILVUS_URI": settings.uri,
              "DATA_DIR": str(settings.data_dir), "DEVICE": settings.device,
              "COLLECTION": session.collection_name, "TEXT_MODEL": settings.text_model}
    return {**os.environ, **{f"TEXTIMG_{key}": value for key, value in values.items()}, START_DIR: os.getcwd()}


def voila_command(port: int, debug: bool = False) -> list[str]:
    """Voilà on ``HOST:port`` exactly (no other port if it is taken), no browser opened."""
    from .app import APP_NOTEBOOK

    return [sys.executable, "-m", "voila", str(APP_NOTEBOOK), f"--port={port}", f"--Voila.ip={HOST}",
            "--Voila.port_retries=0", "--no-browser"] + (["--debug"] if debug else [])


def start_voila(session, port: int, log, debug: bool = False) -> subprocess.Popen:
    """Start Voilà in a session of its own: Ctrl-C reaches only ``textimg app``, which then stops it."""
    return subprocess.Popen(voila_command(port, debug), env=page_env(session), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=True)


def wait_until_up(process: subprocess.Popen, port: int, log, timeout: float = START_TIMEOUT) -> None:
    """Return once Voilà accepts connections; a one-line error if it stops or takes too long."""
    deadline = time.monotonic() + timeout
    while not port_open(port, timeout=0.5):
        if process.poll() is not None:
            raise TextimgError(f"Voila stopped before serving (exit {process.returncode}): {last_line(log)}")
        if time.monotonic() > deadline:
            raise TextimgError(f"Voila did not serve on {HOST}:{port} within {timeout:g} s: {last_line(log)}")
        time.sleep(0.2)


def last_line(log) -> str:
    """The last non-empty line of Voilà's log (``--debug`` shows all of it)."""
    if log is None:
        return "see its messages above"
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


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


def serve_app(session, port: int = DEFAULT_PORT, debug: bool = False, announce=print) -> int:
    """Serve the page for ``session``'s settings until Ctrl-C (or SIGTERM); announce its address once
    it is up. Voilà is stopped whichever way this ends."""
    check_voila()
    port = check_port(port)
    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops Voila too, not only this process
    with tempfile.TemporaryFile() as log:
        process = start_voila(session, port, None if debug else log, debug)
        try:
            wait_until_up(process, port, None if debug else log)
            announce(f"serving http://{HOST}:{port}/ (Ctrl-C to stop)")
            code = process.wait()
            raise TextimgError(f"Voila stopped (exit {code}): {last_line(None if debug else log)}")
        except KeyboardInterrupt:
            return 0
        finally:
            stop_voila(process)
            signal.signal(signal.SIGTERM, previous)
