"""Shared fixtures: the shipped shapes model, an embedded Milvus server, the CLI, images made on the spot.

Everything runs offline: images and bad files are generated here, Milvus Lite files live in
``tmp_path``, and the server fixture starts the ``milvus`` package's embedded server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textimg_helpers import config
from textimg_helpers.cli import main
from textimg_helpers.shapes import generate_shapes

ROOT = Path(__file__).resolve().parent.parent
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture(scope="session")
def shapes_encoder():
    """The shipped offline shapes CLIP (64x64 input, dim 128), loaded once."""
    from textimg_helpers.encoders import load_encoder

    if not config.SHAPES_CHECKPOINT.is_file():
        pytest.skip(f"{config.SHAPES_CHECKPOINT} is missing: train it with `make train-shapes`")
    return load_encoder(str(config.SHAPES_CHECKPOINT), device="cpu")


@pytest.fixture(autouse=True)
def stop_lite_services(tmp_path):
    """After each test, stop the shared Milvus Lite services of the files it made (they outlive clients)."""
    yield
    from textimg_helpers.service import stop_services_under

    stop_services_under(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def stop_session_services(tmp_path_factory):
    """At the end, stop those of session-wide files too."""
    yield
    from textimg_helpers.service import stop_services_under

    stop_services_under(tmp_path_factory.getbasetemp())


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
        last = self.out.strip().splitlines()[-1]
        assert re.fullmatch(r"(\w+=\d+ ?){4}", last), f"last line is not the summary: {last!r}"
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
    """``python -m textimg_helpers ARGS``, for a real process."""
    return [sys.executable, "-m", "textimg_helpers", *map(str, argv)]


def shapes_folder(folder: Path, per_class: int = 1) -> Path:
    """``per_class`` images of each of the 40 shape classes (64x64 PNGs) in ``folder``."""
    generate_shapes(folder, per_class=per_class, size=64)
    return folder


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

