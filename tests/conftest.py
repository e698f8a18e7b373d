"""Shared fixtures and helpers: the shipped shapes model, one indexed Milvus Lite file, the CLI (in this
process or in a real one), pictures checked by their colours, images made on the spot, and the rule that
no test leaves a Milvus process behind.

Everything runs offline: images and bad files are generated here, Milvus Lite files live in
``tmp_path``, and the server fixture starts the ``milvus`` package's embedded server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil
import pymilvus  # noqa: F401 (imported before any test, so PYMILVUS_LEVELS are the levels it sets itself)
import pytest
from PIL import Image

from textimg_helpers import config
from textimg_helpers.cli import main
from textimg_helpers.milvus import PYMILVUS_LOGGERS
from textimg_helpers.service.client import is_service_of, stop_services_under
from textimg_helpers.shapes import COLOURS, generate_shapes

ROOT = Path(__file__).resolve().parent.parent
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
SHAPES_COLLECTION = "textimg_shapes_clip"  # the default collection of the shapes model
# pymilvus' loggers as a fresh Python has them (nothing has run yet): tests that look at what pymilvus
# logs start from these levels, not from whatever an earlier test left.
PYMILVUS_LEVELS = {name: logging.getLogger(name).level for name in PYMILVUS_LOGGERS}


# --- models and servers ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shapes_encoder():
    """The shipped offline shapes CLIP (64x64 input, dim 128), loaded once."""
    from textimg_helpers.encoders import load_encoder

    if not config.SHAPES_CHECKPOINT.is_file():
        pytest.skip(f"{config.SHAPES_CHECKPOINT} is missing: train it with `make train-shapes`")
    return load_encoder(str(config.SHAPES_CHECKPOINT), device="cpu")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of an embedded Milvus 2.3 server, started once (about 8 s)."""
    try:
        from milvus import default_server
    except ImportError as exc:
        pytest.skip(f"the embedded Milvus server is not installed (pip install milvus==2.3.5): {exc}")
    default_server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    try:
        default_server.start()  # picks free ports itself, starting from 19530
    except Exception as exc:  # no binary for this platform, ports, ...
        default_server.stop()
        pytest.skip(f"the embedded Milvus server did not start: {type(exc).__name__}: {exc}")
    yield f"http://127.0.0.1:{default_server.listen_port}"
    default_server.stop()


class Indexed(NamedTuple):
    """A Milvus Lite file holding the shapes images in collection ``SHAPES_COLLECTION``."""

    uri: str
    images: Path


@pytest.fixture(scope="session")
def indexed(tmp_path_factory, shapes_encoder) -> Indexed:
    """120 shapes images (3 per class, 64x64: ``red_circle_0000.png`` ...) indexed once by ``textimg index``
    into a Lite file of their own. Tests read it; they may add collections of other names, never rows."""
    root = tmp_path_factory.mktemp("indexed")
    images, uri = shapes_folder(root / "images", per_class=3), str(root / "milvus.db")
    assert run_cli("index", images, "--uri", uri, "-q").summary == {"indexed": 120, "skipped": 0,
                                                                     "unchanged": 0, "total": 120}
    return Indexed(uri, images)


# --- no Milvus process outlives the test that started it -----------------------------------------------

def is_milvus(cmdline: list[str]) -> bool:
    """Milvus Lite's (or the embedded server's) ``milvus`` binary, or our ``textimg_helpers.service.process``."""
    return bool(cmdline) and (Path(cmdline[0]).name == "milvus" or is_service_of(cmdline))


def milvus_processes(*folders) -> list[psutil.Process]:
    """Live Milvus processes whose command line names a file under one of ``folders`` (another
    session's processes on this machine name other folders, and are never counted)."""
    prefixes = tuple({str(p) + os.sep for f in folders for p in (Path(f), Path(f).resolve())})
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and is_milvus(cmdline) \
                and any(arg.startswith(prefixes) for arg in cmdline[1:]):
            found.append(proc)
    return found


def milvus_children() -> list[psutil.Process]:
    """Live Milvus processes started by this pytest process or its children (while they live)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and is_milvus(proc.cmdline()):
                found.append(proc)
    return found


def left_running(procs: list[psutil.Process], grace: float = 15.0) -> list[str]:
    """The command lines of ``procs`` still alive after ``grace`` seconds (those are killed then)."""
    _, alive = psutil.wait_procs(procs, timeout=grace)
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"pid {proc.pid}: {' '.join(proc.cmdline())}")
            proc.kill()
    return left


@pytest.fixture(autouse=True)
def no_milvus_left(tmp_path):
    """After each test, stop the shared Milvus Lite services of the files it made (they outlive clients);
    a Milvus process that still names its ``tmp_path`` then is a leak: the test errors."""
    yield
    stop_services_under(tmp_path)
    left = left_running(milvus_processes(tmp_path))
    assert not left, "Milvus processes left running by this test:\n" + "\n".join(left)


@pytest.fixture(scope="session", autouse=True)
def no_milvus_left_at_the_end(tmp_path_factory):
    """At the end, stop the services of session-wide files and of the notebooks' data folder, then
    check that no Milvus process of this run is left: none under its folders, none of its children."""
    yield
    folders = [tmp_path_factory.getbasetemp(), *filter(None, [os.environ.get("TEXTIMG_DATA_DIR")])]
    for folder in folders:
        stop_services_under(folder)
    procs = {proc.pid: proc for proc in milvus_processes(*folders) + milvus_children()}
    left = left_running(list(procs.values()))
    assert not left, "Milvus processes left running at the end of the tests:\n" + "\n".join(left)


# --- what pymilvus logs ---------------------------------------------------------------------------------

@pytest.fixture
def pymilvus_log():
    """What pymilvus logs during the test (its own stderr handlers show it, in red in a notebook), with its
    loggers at the levels a fresh Python gives them (``PYMILVUS_LEVELS``), whatever an earlier test left."""
    records, handler = [], logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(f"{record.name} {record.levelname}: {record.getMessage()}")
    loggers = [logging.getLogger(name) for name in ("", *PYMILVUS_LOGGERS)]
    loggers = [logger for logger in loggers if logger.name == "root" or not logger.propagate]  # each record once
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    for name, level in PYMILVUS_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    yield records
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- the CLI -------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What a CLI run showed the user."""

    code: int
    out: str
    err: str

    @property
    def last_err(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def summary(self) -> dict[str, int]:
        """The ``indexed=.. skipped=.. unchanged=.. total=..`` last line of ``textimg index``."""
        last = self.out.strip().splitlines()[-1] if self.out.strip() else ""
        assert re.fullmatch(r"indexed=\d+ skipped=\d+ unchanged=\d+ total=\d+", last), \
            f"last line is not the summary: {last!r} (stderr: {self.err[-2000:]})"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", last)}


def run_cli(*argv) -> Run:
    """Run ``textimg ARGS`` in this process (fast: torch is already imported) and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


def textimg_command(*argv) -> list[str]:
    """``python -m textimg_helpers ARGS``, for a real process (``subprocess.Popen`` where a test needs
    to signal it or close its pipes; ``run_textimg`` otherwise)."""
    return [sys.executable, "-m", "textimg_helpers", *map(str, argv)]


def run_textimg(*argv, env: dict | None = None, cwd=None, timeout: float = 300) -> Run:
    """Run ``textimg ARGS`` in a real process (this environment plus ``env``) and capture its output:
    what a terminal sees, output of Milvus Lite and of native code included."""
    done = subprocess.run(textimg_command(*argv), env={**os.environ, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


# --- pictures --------------------------------------------------------------------------------------------

def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    """``condition()``'s first true value, polled every 0.1 s; an ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shape_colour(picture) -> str:
    """The name of the colour (``red``, ``blue``, ...: ``shapes.COLOURS``) of the shape on a shapes picture:
    the mean of the pixels that stand out from the picture's border (its background), named by the
    nearest palette colour. Right for every one of 1,200 generated shapes images."""
    pixels = np.asarray(picture.convert("RGB") if isinstance(picture, Image.Image) else picture, float)[..., :3]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    shape = pixels[np.linalg.norm(pixels - np.median(border, axis=0), axis=-1) > 60]
    if not len(shape):
        return "none (the picture is all background)"
    names, palette = list(COLOURS), np.array(list(COLOURS.values()), float)
    return names[int(np.argmin(np.linalg.norm(palette - shape.mean(axis=0), axis=1)))]


# --- images made on the spot ---------------------------------------------------------------------------

def shapes_folder(folder: Path, per_class: int = 1) -> Path:
    """``per_class`` images of each of the 40 shape classes (64x64 PNGs) in ``folder``."""
    generate_shapes(folder, per_class=per_class, size=64)
    return folder


def create_older_collection(client, collection_name: str) -> None:
    """A shapes-clip collection (dim 128) of the schema before photos' metadata was stored: id, filepath,
    label, size, mtime and vector only."""
    import json

    from pymilvus import DataType, MilvusClient

    from textimg_helpers.store import INDEX_PARAMS

    schema = MilvusClient.create_schema(auto_id=False, description=json.dumps({"model": "shapes-clip", "dim": 128}))
    for name, kind, extra in [("id", DataType.INT64, {"is_primary": True}), ("filepath", DataType.VARCHAR, {"max_length": 4096}),
                              ("label", DataType.VARCHAR, {"max_length": 512}), ("size", DataType.INT64, {}),
                              ("mtime", DataType.INT64, {}), ("vector", DataType.FLOAT_VECTOR, {"dim": 128})]:
        schema.add_field(name, kind, **extra)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", **INDEX_PARAMS)
    client.create_collection(collection_name, schema=schema, index_params=index, consistency_level="Strong")


def square(mode: str = "RGB", size=(32, 32), colour=RED, background=WHITE) -> Image.Image:
    """A ``colour`` square in the middle of ``background``, in any PIL mode."""
    img = Image.new("RGBA", size, background + (255,) if len(background) == 3 else background)
    w, h = size
    img.paste(colour + (255,), (w // 4, h // 4, w - w // 4, h - h // 4))
    return img if mode == "RGBA" else img.convert(mode)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A few-byte PNG claiming ``width`` x ``height`` pixels (a decompression bomb, made cheaply)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def noise(size=(32, 32), seed: int = 0) -> Image.Image:
    """Random pixels (compress badly, so a truncated copy really misses image data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def truncated(path: Path, source: Path) -> Path:
    """The first half of ``source`` saved as ``path`` (an interrupted copy or download)."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
