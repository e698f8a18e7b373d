"""One download, many machines: a ``textimg download`` folder runs the ``clip`` profile with no network.

The folder is laid out here as ``textimg download`` lays it out: a random-weights ViT-B/32 checkpoint
(fp16, as OpenAI's files are) where CLIP's weights go, a few generated images where the tutorial's go,
and the list of files. ``Session.from_settings()``, notebook 00 and ``textimg index`` then use it while
every connection to an address other than this machine's, and every name look-up, fails the test: in
this process through ``socket``, in the processes it starts (the CLI, the notebook's kernel, Milvus
Lite's service) through a ``sitecustomize`` on their ``PYTHONPATH``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, run_cli, run_textimg, square
from test_downloads import ARCHIVE, ArchiveServer
from textimg_helpers import bundle, downloads
from textimg_helpers.bundle import bundle_problem, download_bundle, record_file
from textimg_helpers.config import BUNDLE_MANIFEST, Settings, TextimgError
from textimg_helpers.session import Session

IMAGES_PER_LABEL = 4
GUARD = '''
"""Fails (and logs) every connection to another machine, and every name look-up but localhost's."""
import os
import socket

LOCAL = ("", "localhost", "::1", "0.0.0.0")


def is_local_host(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in LOCAL or host.startswith("127.")


def is_local(address) -> bool:
    return not isinstance(address, tuple) or is_local_host(address[0])


def replacements(log: str) -> dict:
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def note(what):
        with open(log, "a") as out:
            out.write(f"pid {os.getpid()}: {what}\\n")

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address):
            note(f"connect {address}")
            raise OSError(101, "the network is off in this test")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address):
            note(f"connect_ex {address}")
            return 101
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not is_local_host(host):
            note(f"getaddrinfo {host}")
            raise socket.gaierror(-2, "the network is off in this test")
        return getaddrinfo(host, *args, **kwargs)

    return {"connect": guarded_connect, "connect_ex": guarded_connect_ex, "getaddrinfo": guarded_getaddrinfo}


if os.environ.get("TEXTIMG_TEST_NETLOG"):
    found = replacements(os.environ["TEXTIMG_TEST_NETLOG"])
    socket.socket.connect, socket.socket.connect_ex = found["connect"], found["connect_ex"]
    socket.getaddrinfo = found["getaddrinfo"]
'''


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A random ViT-B/32 state dict in fp16, saved once (about 300 MB); ``clip.load`` reads it as a
    checkpoint."""
    import torch

    from textimg_helpers.encoders import random_model

    path = tmp_path_factory.mktemp("weights") / "ViT-B-32.pt"
    torch.save({key: value.half() for key, value in random_model("ViT-B/32").state_dict().items()}, path)
    return path


def lay_out(folder, weights=None, images: int = IMAGES_PER_LABEL):
    """A ``textimg download`` folder: the weights (linked, not copied), a zip of generated JPEGs laid out
    as the tutorial's archive, and the list of files."""
    (folder / "clip").mkdir(parents=True)
    if weights is not None:
        (folder / "clip" / "ViT-B-32.pt").symlink_to(weights)
        record_file(folder, "clip/ViT-B-32.pt")
    with zipfile.ZipFile(folder / "reverse_image_search.zip", "w") as archive:
        for label, colour in (("goldfish", (255, 120, 0)), ("tabby_cat", (90, 90, 90))):
            for i in range(images):
                jpeg = io.BytesIO()
                square(size=(80 + 8 * i, 64), colour=colour).save(jpeg, "JPEG")
                archive.writestr(f"reverse_image_search/train/{label}/{label}_{i}.JPEG", jpeg.getvalue())
    record_file(folder, "reverse_image_search.zip")
    return folder


def listing(folder) -> list:
    """Every path under ``folder`` with its size and modification time: what a write would change."""
    return sorted((str(p), p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="session")
def offline_folder(tmp_path_factory, weights):
    return lay_out(tmp_path_factory.mktemp("usb-stick") / "textimg-offline", weights)


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """The network off, here and in every Python process started from here; yields the log of tries."""
    guard_dir, log = tmp_path / "guard", tmp_path / "network.log"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    spec = importlib.util.spec_from_file_location("network_guard", guard_dir / "sitecustomize.py")
    guard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard)
    found = guard.replacements(str(log))
    monkeypatch.setattr(socket.socket, "connect", found["connect"])
    monkeypatch.setattr(socket.socket, "connect_ex", found["connect_ex"])
    monkeypatch.setattr(socket, "getaddrinfo", found["getaddrinfo"])
    monkeypatch.setenv("TEXTIMG_TEST_NETLOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(guard_dir), os.environ.get("PYTHONPATH")])))
    yield log
    assert not log.exists(), f"network calls: {log.read_text()}"


def test_the_guard_catches_a_network_call(no_network):
    """The guard itself: a look-up and a connection fail, and are logged (the fixture's check then
    fails on the log, so it is emptied here)."""
    from textimg_helpers.config import host_reachable

    assert not host_reachable("openaipublic.azureedge.net")
    assert "getaddrinfo openaipublic.azureedge.net" in no_network.read_text()
    no_network.unlink()
    started = subprocess.run([sys.executable, "-c", "from textimg_helpers.config import host_reachable\n"
                              "print(host_reachable('github.com'), host_reachable('127.0.0.1', 9))"],
                             capture_output=True, text=True, env=os.environ.copy())
    assert started.stdout.split() == ["False", "False"], started.stderr
    assert no_network.read_text().split(": ", 1)[1] == "getaddrinfo github.com\n"  # not the loopback address
    no_network.unlink()


def test_session_from_settings_takes_clip_from_the_folder(offline_folder, no_network, tmp_path):
    before = listing(offline_folder)
    settings = Settings(profile="auto", data_dir=tmp_path / "data", cache=offline_folder)
    session = Session.from_settings(settings)
    assert (session.profile, session.model_name, session.collection_name) == ("clip", "ViT-B/32", "textimg_vit_b_32")
    assert session.model == str(offline_folder / "clip" / "ViT-B-32.pt")
    folder = session.image_folder()  # extracted from the folder's zip into the learner's own data folder
    assert folder == tmp_path / "data" / "reverse_image_search" / "train"
    assert sorted(p.name for p in folder.rglob("*.JPEG"))[:2] == ["goldfish_0.JPEG", "goldfish_1.JPEG"]
    encoder = session.load_encoder()
    assert (encoder.name, encoder.dim, encoder.resolution) == ("ViT-B/32", 512, 224)
    assert encoder.encode_texts(["a goldfish"]).shape == (1, 512)
    assert listing(offline_folder) == before  # only read: one read-only copy serves every learner


def test_textimg_demo_and_index_run_from_the_folder(offline_folder, no_network, tmp_path):
    uri, data = tmp_path / "milvus.db", tmp_path / "data"
    env = {"TEXTIMG_PROFILE": "auto", "TEXTIMG_DATA_DIR": str(data)}
    demo = run_textimg("demo", "--from", offline_folder, "--uri", uri, "-q", env=env, cwd=tmp_path)
    assert demo.code == 0 and "top 10 for 'a white dog':" in demo.out, demo.err
    assert f"profile=clip model=ViT-B/32 images={data / 'reverse_image_search' / 'train'}" in demo.err
    run = run_textimg("index", data / "reverse_image_search" / "train", "--uri", uri, "-q",
                      env={**env, "TEXTIMG_CACHE": str(offline_folder)})
    assert run.summary == {"indexed": 0, "skipped": 0, "unchanged": 2 * IMAGES_PER_LABEL,
                           "total": 2 * IMAGES_PER_LABEL}
    stats = run_textimg("stats", "--uri", uri, "--from", offline_folder, env=env)
    assert stats.out.split() == ["rows=8", "model=ViT-B/32", "dim=512"], stats.out + stats.err


def test_notebook_00_runs_from_the_folder(offline_folder, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTIMG_PROFILE", "auto")
    monkeypatch.setenv("TEXTIMG_CACHE", str(offline_folder))
    monkeypatch.setenv("TEXTIMG_DATA_DIR", str(tmp_path / "data"))
    nb = nbformat.read(ROOT / "notebooks" / "00_setup.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    search = next(cell for cell in nb.cells if cell.cell_type == "code" and "client.search(" in cell.source)
    hits = ast.literal_eval(search.outputs[-1]["data"]["text/plain"])
    assert len(hits) == 2 * IMAGES_PER_LABEL and all(name.endswith(".JPEG") for name, _ in hits), hits
    setup = next(cell for cell in nb.cells if cell.cell_type == "code" and "Session.from_settings()" in cell.source)
    assert "ViT-B-32.pt" in setup.outputs[-1]["data"]["text/plain"]


# --- a folder that lacks something: one line naming the file and the command -----------------------------

@pytest.fixture
def small_weights(tmp_path):
    """A stand-in for the weights file where only its size and presence are looked at."""
    path = tmp_path / "stand-in.pt"
    path.write_bytes(b"\0" * 1000)
    return path


@pytest.mark.parametrize("damage", ["no weights", "cut weights", "cut archive", "no list"])
def test_incomplete_folder_gets_one_line_with_the_fix(tmp_path, small_weights, damage, no_network):
    folder = lay_out(tmp_path / "stick", small_weights)
    target = folder / "clip" / "ViT-B-32.pt"
    archive_size = (folder / "reverse_image_search.zip").stat().st_size
    if damage == "no weights":
        target.unlink()
    elif damage == "cut weights":
        target.unlink()
        target.write_bytes(b"\0" * 600)
    elif damage == "cut archive":
        archive = folder / "reverse_image_search.zip"
        archive.write_bytes(archive.read_bytes()[:500])
    else:
        (folder / BUNDLE_MANIFEST).unlink()
    expected = {"no weights": f"{target} is missing",
                "cut weights": f"{target} is incomplete or corrupt (600 bytes, not 1,000)",
                "cut archive": f"{folder / 'reverse_image_search.zip'} is incomplete or corrupt (500 bytes, not "
                               f"{archive_size:,})",
                "no list": f"{folder} is not a textimg download folder (no {BUNDLE_MANIFEST})"}[damage]
    line = f"{expected}: run textimg download --to {folder}"
    assert bundle_problem(folder) == line
    with pytest.raises(TextimgError) as caught:
        Session.from_settings(Settings(profile="clip", cache=folder, data_dir=tmp_path / "data"))
    assert str(caught.value) == line
    said = []
    session = Session.from_settings(Settings(profile="auto", cache=folder, data_dir=tmp_path / "data"),
                                    announce=said.append)
    assert session.profile == "shapes" and len(said) == 1 and line in said[0]
    run = run_cli("index", folder, "--from", folder, "--profile", "clip", "--uri", tmp_path / "milvus.db")
    assert run.code == 1 and run.err.strip().splitlines() == [f"textimg: error: {line}"]


def test_a_corrupt_archive_of_the_right_size_is_named_when_extracted(tmp_path, small_weights, no_network):
    folder = lay_out(tmp_path / "stick", small_weights)
    archive = folder / "reverse_image_search.zip"
    body = bytearray(archive.read_bytes())
    body[len(body) // 3] ^= 0xFF  # same size: only the zip's CRC check tells
    archive.write_bytes(bytes(body))
    session = Session.from_settings(Settings(profile="clip", cache=folder, data_dir=tmp_path / "data"))
    with pytest.raises(TextimgError) as caught:
        session.image_folder()
    assert str(caught.value) == f"{archive} is corrupt (zip check failed): run textimg download --to {folder}"
    assert not (tmp_path / "data" / "reverse_image_search").exists()  # nothing half-extracted


def test_other_model_missing_names_its_download_command(tmp_path, small_weights, no_network):
    folder = lay_out(tmp_path / "stick", small_weights)
    with pytest.raises(TextimgError, match=r"clip/ViT-B-16\.pt is missing: run textimg download --to \S+ "
                                           r"--model ViT-B/16$"):
        Session.from_settings(Settings(profile="clip", model="ViT-B/16", cache=folder, data_dir=tmp_path))


# --- textimg download: verified, resumed, kept ---------------------------------------------------------------

@pytest.fixture
def servers(monkeypatch):
    """Two local servers, CLIP's weights (any bytes, their sha256 in the address) and the tutorial's archive."""
    monkeypatch.setattr(downloads.time, "sleep", lambda seconds: None)
    body = bytes(range(256)) * 2000
    found = []
    for served in (body, ARCHIVE):
        server = ArchiveServer(served)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        found.append(server)
    weights, archive = found
    sha = hashlib.sha256(body).hexdigest()
    monkeypatch.setattr(bundle, "clip_url", lambda model: f"http://127.0.0.1:{weights.server_address[1]}/{sha}/ViT-B-32.pt")
    monkeypatch.setattr(bundle, "DATASET_URL", archive.url)
    yield weights, archive
    for server in found:
        server.shutdown()
        server.server_close()


def test_download_verifies_resumes_and_keeps_what_is_good(servers, tmp_path):
    weights, archive = servers
    folder = tmp_path / "stick"
    weights.cut_next = 1
    said = []
    download_bundle(folder, announce=said.append)
    assert (folder / "clip" / "ViT-B-32.pt").read_bytes() == weights.body
    assert weights.requests[0] is None and weights.requests[1].startswith("bytes=")  # resumed, not restarted
    assert bundle_problem(folder) is None and said[-1].startswith(f"complete: copy {folder}")
    assert (folder / "reverse_image_search.zip").read_bytes() == archive.body  # kept whole: extracted where used
    weights.requests.clear(), archive.requests.clear()
    download_bundle(folder, announce=said.append)
    assert weights.requests == archive.requests == []  # all there and good: nothing fetched again
    body = bytearray(weights.body)
    body[1000] ^= 0xFF  # same size, one byte changed: only the sha256 tells
    (folder / "clip" / "ViT-B-32.pt").write_bytes(bytes(body))
    download_bundle(folder, announce=said.append)
    assert (folder / "clip" / "ViT-B-32.pt").read_bytes() == weights.body and len(weights.requests) == 1


def test_download_refuses_bytes_that_are_not_the_named_file(servers, tmp_path):
    weights, _ = servers
    weights.body = b"not the weights" * 100
    with pytest.raises(TextimgError, match="sha256 check failed"):
        download_bundle(tmp_path / "stick", images=False)
    assert not (tmp_path / "stick" / "clip" / "ViT-B-32.pt").exists()


def test_the_multilingual_text_model_comes_from_the_folder(tmp_path, small_weights, monkeypatch, no_network):
    from textimg_helpers import bundle, multilingual

    folder = lay_out(tmp_path / "stick", small_weights)
    settings = Settings(profile="clip", cache=folder, data_dir=tmp_path / "data", text_model="multilingual")
    with pytest.raises(TextimgError, match=f"{folder / 'huggingface'} lacks the multilingual text model: run "
                                           f"textimg download --to {folder} --text-model multilingual$"):
        Session.from_settings(settings)
    asked = []
    monkeypatch.setattr(multilingual, "load_text_encoder", lambda *args, **kwargs: asked.append((args, kwargs)))
    bundle.fetch_text_model(folder, announce=lambda line: None)  # what textimg download --text-model does
    Session.from_settings(settings).load_text_encoder()
    assert asked == [(("multilingual", "cpu"), {"cache_folder": str(folder / "huggingface")}),
                     (("multilingual", "auto"), {"cache_folder": str(folder / "huggingface")})]


def test_textimg_download_prints_each_part_and_the_next_step(servers, tmp_path):
    folder = tmp_path / "stick"
    run = run_cli("download", "--to", folder)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("ok  clip/ViT-B-32.pt (CLIP ViT-B/32, sha256 ") and lines[1].startswith(
        "ok  reverse_image_search.zip (")
    assert lines[-1] == f"complete: copy {folder} to the other machines, then TEXTIMG_CACHE={folder} (or --from {folder})"
    assert bundle_problem(folder) is None
    refused = run_cli("download", "--to", folder, "--model", "ViT-B-32/laion2b_s34b_b79k")
    assert refused.code == 1 and refused.err.strip().splitlines()[-1].startswith(
        "textimg: error: textimg download takes OpenAI's CLIP names (RN50, ")
