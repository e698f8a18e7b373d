"""One machine, several users and programs: the Milvus Lite service answers its own user only, serves
each file with one engine whatever other programs do, frees the file soon after the last client, and
neither trusts nor needs its state file.

The tests of what another user can reach run as a second Unix user made with ``useradd`` (root only:
skipped with the reason otherwise); traffic stays on this machine.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

from conftest import run_textimg, shapes_folder, wait_for
from textimg_helpers.config import Settings, resolved_path
from textimg_helpers.milvus import connect
from textimg_helpers.service.client import read_state, services_of, stop_service
from textimg_helpers.service.files import available, lite_lock_file, log_file, state_file

pytestmark = pytest.mark.skipif(not available(), reason="no Milvus Lite 2.5 server on this platform")

GUEST = "textimg-guest"
ENV = {"TEXTIMG_BF16": "0"}


@pytest.fixture(scope="module")
def guest() -> str:
    """A second Unix user of this machine, made for the tests (root only)."""
    if os.geteuid() != 0:
        pytest.skip("a second Unix user can only be made as root")
    try:
        pwd.getpwnam(GUEST)
    except KeyError:
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", GUEST],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"useradd failed: {made.stderr.strip()}")
    return GUEST


def as_user(user: str, code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` as ``user`` (the system Python: this checkout's may not be readable to them)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run([python, "-c", textwrap.dedent(code)], user=user, cwd="/", capture_output=True,
                          text=True, timeout=60)


def milvus_binaries(db: Path) -> list[psutil.Process]:
    """Live Milvus Lite engines (``milvus`` binaries) that have ``db`` open."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name == "milvus" and str(db) in cmdline \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_another_user_reaches_no_service_and_reads_no_state(tmp_path, guest):
    db = resolved_path(tmp_path / "m.db")
    client = connect(str(db))
    client.create_collection("private", dimension=4)
    state = read_state(db)
    sock, state_path = state["socket"], state_file(db)
    open_dir = Path(tempfile.mkdtemp(prefix="textimg-control-"))  # a socket anyone may reach: the probe works
    open_dir.chmod(0o755)
    control = open_dir / "control.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(control))
        os.chmod(control, 0o777)
        listener.listen()
        probe = as_user(guest, f"""
            import socket
            for path in ({str(control)!r}, {sock!r}):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                    print(path, "connected")
                except OSError as exc:
                    print(path, type(exc).__name__)
            try:
                open({str(state_path)!r}).read()
                print("state read")
            except OSError as exc:
                print("state", type(exc).__name__)
        """)
    shutil.rmtree(open_dir)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == [f"{control} connected", f"{sock} PermissionError", "state PermissionError"]
    procs = [proc for proc in services_of(db)]
    procs += [child for proc in procs for child in proc.children(recursive=True)]
    assert not [c for p in procs for c in p.net_connections(kind="inet")], "no TCP socket at all"
    assert client.list_collections() == ["private"]


def test_the_tutorials_plain_client_twice_never_starts_a_second_engine(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=1)
    db = resolved_path(tmp_path / "m.db")
    assert run_textimg("index", folder, "--uri", db, "-q", env=ENV).summary["total"] == 40
    assert len(milvus_binaries(db)) == 1
    plain = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        from pymilvus import MilvusClient
        for attempt in range(2):  # a learner running the tutorial's cell twice
            try:
                MilvusClient(uri={str(db)!r})
                print("opened")
            except Exception as exc:
                print("refused", type(exc).__name__)
    """)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert plain.stdout.split("\n")[:2] == ["refused IsADirectoryError"] * 2, plain.stdout + plain.stderr
    assert len(milvus_binaries(db)) == 1
    more = shapes_folder(tmp_path / "more", per_class=1)
    assert run_textimg("index", more, "--uri", db, "-q", env=ENV).summary["total"] == 80
    stop_service(db)
    assert run_textimg("stats", "--uri", db).out.startswith("rows=80 ")


def test_a_commands_service_is_gone_soon_after_and_the_plain_client_opens_the_file(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=1)
    db = resolved_path(tmp_path / "m.db")
    assert run_textimg("index", folder, "--uri", db, "-q", env={**ENV, "TEXTIMG_SERVICE_IDLE": "2"}).code == 0
    wait_for(lambda: not services_of(db) and not milvus_binaries(db), timeout=20, what="the idle exit")
    assert not lite_lock_file(db).exists()
    plain = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        from pymilvus import MilvusClient
        client = MilvusClient(uri={str(db)!r})
        print(client.query("textimg_shapes_clip", filter="", output_fields=["count(*)"])[0]["count(*)"])
        client.close()
    """)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert plain.stdout.strip().splitlines()[-1:] == ["40"], plain.stdout + plain.stderr


def test_the_default_idle_time_is_at_most_a_minute():
    assert Settings().service_idle <= 60 and Settings.from_env({}).service_idle <= 60


def test_a_service_whose_folder_is_deleted_exits(tmp_path):
    folder = tmp_path / "db"
    db = resolved_path(folder / "m.db")
    connect(str(db)).create_collection("c", dimension=4)
    (proc,) = services_of(db)
    shutil.rmtree(folder)
    psutil.wait_procs([proc], timeout=15)
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("damage", ["garbled", "missing", "names pid 1"])
def test_a_damaged_state_file_locks_nobody_out(tmp_path, damage):
    db = resolved_path(tmp_path / "m.db")
    connect(str(db)).create_collection("c", dimension=4)
    state = state_file(db)
    if damage == "garbled":
        state.write_text("{not json")
    elif damage == "missing":
        state.unlink()
    else:
        state.write_text(json.dumps({**json.loads(state.read_text()), "pid": 1}))
    again = connect(str(db))  # no "in use", no second service
    assert again.list_collections() == ["c"] and len(services_of(db)) == 1
    status = run_textimg("serve", "--status", "--uri", db)
    assert status.code == 0 and status.out.startswith(f"serving {db} at unix:"), status.out + status.err
    stop = run_textimg("serve", "--stop", "--uri", db)
    assert stop.code == 0 and stop.out.startswith(f"stopped {db}")
    assert not services_of(db) and psutil.pid_exists(1)


def test_stop_never_signals_a_process_the_state_file_names(tmp_path):
    db = resolved_path(tmp_path / "m.db")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(bystander.pid).create_time()
        connect(str(db)).create_collection("c", dimension=4)
        state = state_file(db)
        state.write_text(json.dumps({**json.loads(state.read_text()), "pid": bystander.pid, "started": started}))
        assert run_textimg("serve", "--stop", "--uri", db).code == 0
        assert not services_of(db)
        assert bystander.poll() is None, "the process named by the state file was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_planted_symbolic_link_beside_the_database_is_not_written_through(tmp_path):
    db = resolved_path(tmp_path / "m.db")
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    log_file(db).symlink_to(target)
    connect(str(db)).create_collection("c", dimension=4)
    assert target.read_text() == "keep me"
    assert not log_file(db).is_symlink() and "serving" in log_file(db).read_text()
