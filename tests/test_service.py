"""The shared Milvus Lite service: every process that names a Lite file uses it at the same time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import run_textimg, shapes_folder, textimg_command, wait_for
from textimg_helpers.config import TextimgError, resolved_path
from textimg_helpers.milvus import connect
from textimg_helpers.service.client import read_state, services_of, stop_service
from textimg_helpers.service.files import available, socket_path, state_file
from textimg_helpers.store import count_rows

pytestmark = pytest.mark.skipif(not available(), reason="no Milvus Lite 2.5 server on this platform")


def test_two_processes_use_one_file_at_once(tmp_path):
    db = tmp_path / "m.db"
    first = connect(str(db))
    first.create_collection("c", dimension=4)
    code = (f"from textimg_helpers.milvus import connect; c = connect({str(db)!r}); "
            "c.insert('c', [{'id': 1, 'vector': [1, 0, 0, 0]}]); print(c.query('c', filter='', output_fields=['count(*)'])[0]['count(*)'])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "1"
    assert count_rows(first, "c") == 1  # the other process's row, seen here at once


def test_a_stale_state_file_is_replaced(tmp_path):
    db = tmp_path / "m.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "socket": str(socket_path(db)), "started": 1.0, "db": str(db)}
    state_file(db).write_text(json.dumps(stale))
    client = connect(str(db))
    client.create_collection("c", dimension=4)
    state = json.loads(state_file(db).read_text())
    assert state["pid"] != dead.pid and client.list_collections() == ["c"]
    # a reboot: the pid is alive again but is another process (its start time differs)
    state_file(db).write_text(json.dumps({**state, "pid": os.getpid()}))
    try:
        assert read_state(db) is None
    finally:
        state_file(db).write_text(json.dumps(state))  # the real one again: the service can be stopped


def test_two_processes_starting_at_once_get_one_service(tmp_path):
    db, go = tmp_path / "m.db", tmp_path / "go"
    code = ("import os, time, sys\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
            f"from textimg_helpers.milvus import connect\nprint(connect({str(db)!r}).service_uri)")
    starters = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    time.sleep(2)  # all three imported and waiting
    go.touch()
    uris = {starter.communicate(timeout=120)[0].strip() for starter in starters}
    (proc,) = services_of(resolved_path(db))
    assert uris == {f"unix:{socket_path(resolved_path(db), proc.pid)}"}


def test_the_service_listens_on_a_private_socket_and_no_port(tmp_path):
    db = tmp_path / "m.db"
    connect(str(db))
    (proc,) = services_of(db)
    procs = [proc, *proc.children(recursive=True)]
    assert not [c for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    sock = socket_path(resolved_path(db), proc.pid)
    assert str(sock) in {c.laddr for p in procs for c in p.net_connections(kind="unix")}
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700" and sock.parent.stat().st_uid == os.getuid()
    assert oct(state_file(resolved_path(db)).stat().st_mode & 0o777) == "0o600"


def test_idle_service_stops_and_a_client_starts_a_new_one(tmp_path):
    db = tmp_path / "m.db"
    client = connect(str(db), idle=1.5)
    client.create_collection("c", dimension=4)
    client.insert("c", [{"id": 1, "vector": [1, 0, 0, 0]}])
    first = read_state(db)
    client.close()  # no client left: the service stops after 1.5 s
    wait_for(lambda: not services_of(db), what="the idle exit")
    assert not state_file(db).exists()
    again = connect(str(db), idle=1.5)
    assert count_rows(again, "c") == 1 and read_state(db)["pid"] != first["pid"]


def test_a_held_client_outlives_its_service(tmp_path):
    """A panel left open over lunch: the service was stopped (or killed); the next call still answers."""
    db = tmp_path / "m.db"
    client = connect(str(db))
    client.create_collection("c", dimension=4)
    client.insert("c", [{"id": 1, "vector": [1, 0, 0, 0]}])
    os.kill(read_state(db)["pid"], signal.SIGKILL)
    wait_for(lambda: not services_of(db), what="the killed service to go")
    assert count_rows(client, "c") == 1
    assert stop_service(db) is not None
    assert client.search("c", [[1, 0, 0, 0]], limit=1)[0][0]["id"] == 1


def test_serve_status_and_stop(tmp_path):
    db = tmp_path / "m.db"
    serve = subprocess.Popen(textimg_command("serve", "--uri", db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        line = serve.stdout.readline().strip()
        (child,) = psutil.Process(serve.pid).children()
        address = f"unix:{socket_path(resolved_path(db), child.pid)}"
        assert line == f"serving {db} at {address}"
        client = connect(str(db))
        assert client.service_uri == address  # a client uses the service that runs in the foreground
        status = run_textimg("serve", "--status", "--uri", db)
        assert (status.code, status.out.strip()) == (0, f"serving {db} at {address} (pid {child.pid})")
        again = run_textimg("serve", "--uri", db, timeout=60)
        assert again.code == 1 and "already served" in again.err
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        assert serve.wait(timeout=30) == 0
        assert f"stopped serving {db}" in serve.stderr.read()
    finally:
        serve.kill()
    status = run_textimg("serve", "--status", "--uri", db)
    assert (status.code, status.out.strip()) == (3, f"no service for {db}")
    connect(str(db))  # a background one now
    stop = run_textimg("serve", "--stop", "--uri", db)
    assert stop.code == 0 and stop.out.startswith(f"stopped {db} at unix:")
    assert not services_of(db) and not state_file(db).exists()


def test_a_file_held_by_another_program_gets_the_one_line_message(tmp_path):
    db = tmp_path / "m.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pymilvus import MilvusClient; c = MilvusClient({str(db)!r}); print('open', flush=True); "
                               "import time; time.sleep(120)"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(TextimgError, match=r"in use by another process \(Milvus Lite allows one process per file\)"):
            connect(str(db))
    finally:
        holder.kill()
        holder.wait()


def test_killing_the_service_during_index_loses_nothing_and_duplicates_nothing(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=3)  # 120 images
    db = tmp_path / "m.db"
    args = ("index", folder, "--uri", db, "--batch-size", "8", "--write-every", "8", "-q")
    run = subprocess.Popen(textimg_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "TEXTIMG_BF16": "0"})
    client = wait_for(lambda: read_state(db) and connect(str(db)), what="the service")
    wait_for(lambda: "textimg_shapes_clip" in client.list_collections()
             and count_rows(client, "textimg_shapes_clip") >= 16, timeout=120, what="some rows")
    os.kill(read_state(db)["pid"], signal.SIGKILL)  # in the middle of the run
    out, err = run.communicate(timeout=300)
    again = run_textimg(*args, env={"TEXTIMG_BF16": "0"})
    assert again.code == 0, again.err
    assert again.out.strip().splitlines()[-1].endswith("total=120"), (out, err, again.out)
    rows = client.query("textimg_shapes_clip", filter="", output_fields=["filepath"], limit=1000)
    assert len(rows) == len({row["filepath"] for row in rows}) == 120
