"""Downloads: cut, corrupt or stale archives are detected, resumed or redone, never half-extracted.

A local HTTP server on 127.0.0.1 serves a generated zip; no external network is used.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, square
from textimg_helpers import downloads
from textimg_helpers.config import SHAPES_CHECKPOINT, TextimgError
from textimg_helpers.data import list_image_paths
from textimg_helpers.downloads import DATASET_DIR, download, extract, tutorial_images, zip_ok


def make_archive() -> bytes:
    """A small tutorial-like archive: ``reverse_image_search/train/<label>/*.png`` plus some noise."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for label in ("goldfish", "tabby_cat"):
            image = io.BytesIO()
            square().save(image, "PNG")
            zf.writestr(f"{DATASET_DIR}/train/{label}/{label}_1.png", image.getvalue())
        zf.writestr(f"{DATASET_DIR}/noise.bin", np.random.default_rng(0).bytes(200_000))  # a long body
    return buffer.getvalue()


ARCHIVE = make_archive()


def corrupted(archive: bytes) -> bytes:
    """Same size, one flipped byte inside a member: only the CRC check can tell."""
    body = bytearray(archive)
    body[len(body) // 2] ^= 0xFF
    return bytes(body)


class ArchiveServer(ThreadingHTTPServer):
    """Serves ``body`` at any path; can cut the next response half-way and ignore Range headers."""

    def __init__(self, body: bytes):
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.body, self.ranges, self.cut_next, self.requests = body, True, 0, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/reverse_image_search.zip"


class ArchiveHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server, wanted = self.server, self.headers.get("Range")
        server.requests.append(wanted)
        start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1)) if wanted and server.ranges else 0
        if start >= len(server.body) > 0:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
        payload = server.body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_next:  # the connection drops half-way
            server.cut_next -= 1
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(monkeypatch):
    monkeypatch.setattr(downloads.time, "sleep", lambda seconds: None)  # no back-off between retries
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    server = ArchiveServer(ARCHIVE)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_cut_download_is_resumed_where_it_stopped(http_server, tmp_path):
    http_server.cut_next = 1
    dest = download(http_server.url, tmp_path / "archive.zip")
    assert dest.read_bytes() == ARCHIVE
    first, second = http_server.requests
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second).group(1))
    assert first is None and len(ARCHIVE) // 2 - 1024 < resumed_at <= len(ARCHIVE) // 2  # resumed (from the last whole chunk), not restarted
    assert not (tmp_path / "archive.zip.part").exists()


def test_server_without_range_support_restarts_from_zero(http_server, tmp_path):
    http_server.ranges = False
    (tmp_path / "archive.zip.part").write_bytes(ARCHIVE[:1000])  # left by an interrupted run
    assert download(http_server.url, tmp_path / "archive.zip").read_bytes() == ARCHIVE
    assert http_server.requests == ["bytes=1000-"]  # asked to resume, got the whole file, kept it whole


@pytest.mark.parametrize("stale_size", [5000, len(ARCHIVE) + 10])  # shorter or longer than the file
def test_stale_partial_file_is_redone(http_server, tmp_path, stale_size):
    (tmp_path / "archive.zip.part").write_bytes(b"x" * stale_size)  # from another version of the file
    assert download(http_server.url, tmp_path / "archive.zip").read_bytes() == ARCHIVE
    assert http_server.requests == [f"bytes={stale_size}-", None]  # resume failed (corrupt zip or 416)


def test_cached_truncated_archive_is_downloaded_again(http_server, tmp_path):
    (tmp_path / "archive.zip").write_bytes(ARCHIVE[: len(ARCHIVE) // 3])
    assert download(http_server.url, tmp_path / "archive.zip").read_bytes() == ARCHIVE


def test_corrupt_download_is_never_extracted(http_server, tmp_path):
    http_server.body = corrupted(ARCHIVE)
    assert len(http_server.body) == len(ARCHIVE) and not zip_ok_bytes(http_server.body, tmp_path)
    with pytest.raises(TextimgError, match="corrupt.*TEXTIMG_PROFILE=shapes"):
        tutorial_images(tmp_path, url=http_server.url)
    assert http_server.requests == [None, None, None]  # tried three times, from zero each time
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no archive, no .part, no half folder


def test_offline_download_says_so_in_one_line(http_server, tmp_path):
    url = "http://127.0.0.1:9/reverse_image_search.zip"  # the discard port: nothing listens
    with pytest.raises(TextimgError) as error:
        tutorial_images(tmp_path, url=url)
    assert str(error.value) == (f"could not download {url} (no connection to 127.0.0.1:9); without internet use "
                                "the offline profile: TEXTIMG_PROFILE=shapes")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half folder


def test_tutorial_images_download_extract_and_reuse(http_server, tmp_path):
    http_server.cut_next = 1
    train = tutorial_images(tmp_path, url=http_server.url)
    assert train == tmp_path / DATASET_DIR / "train"
    assert [p.relative_to(train).as_posix() for p in list_image_paths(train)] == [
        "goldfish/goldfish_1.png", "tabby_cat/tabby_cat_1.png"]
    assert tutorial_images(tmp_path, url="http://127.0.0.1:9/unused") == train  # cached: no request


def test_extract_is_all_or_nothing(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(corrupted(ARCHIVE))
    with pytest.raises(TextimgError, match=f"could not extract {re.escape(str(archive))}.*delete it"):
        extract(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.zip"]


def zip_ok_bytes(body: bytes, folder: Path) -> bool:
    (folder / "check.zip").write_bytes(body)
    try:
        return zip_ok(folder / "check.zip")
    finally:
        (folder / "check.zip").unlink()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_names_the_file_to_delete(tmp_path, damage):
    from textimg_helpers.encoders import load_encoder

    checkpoint = tmp_path / "ViT-B-32.pt"
    if damage == "garbage":
        checkpoint.write_bytes(np.random.default_rng(1).bytes(4096))
    else:
        if not SHAPES_CHECKPOINT.is_file():
            pytest.skip(f"{SHAPES_CHECKPOINT} is missing")
        checkpoint.write_bytes(SHAPES_CHECKPOINT.read_bytes()[:100_000])  # an interrupted copy
    with pytest.raises(TextimgError, match=f"delete {re.escape(str(checkpoint))} and run again"):
        load_encoder(str(checkpoint))

    square().save(tmp_path / "one.png")
    run = run_cli("index", tmp_path, "--model", checkpoint, "--uri", tmp_path / "milvus.db", "-q")
    assert run.code == 1 and run.out == "" and "Traceback" not in run.err
    assert run.err.strip() == run.last_err and f"delete {checkpoint} and run again" in run.last_err
