"""Faults of the disk and of Milvus Lite, made for real: nothing is lost silently, nothing is reported
as saved that was not, and the next run after the fault is fixed completes with exactly N rows.

Writes that fail (a folder made immutable with ``chattr +i``, a full disk on a small ``tmpfs``) need
root; the faults that cannot be made here are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from conftest import run_textimg, shapes_folder, textimg_command, wait_for
from textimg_helpers.config import resolved_path
from textimg_helpers.milvus import connect
from textimg_helpers.service.client import read_state, services_of, stop_service, stop_services_under
from textimg_helpers.service.files import available, log_file
from textimg_helpers.store import count_rows

pytestmark = pytest.mark.skipif(not available(), reason="no Milvus Lite 2.5 server on this platform")

COLLECTION = "textimg_shapes_clip"
ENV = {"TEXTIMG_BF16": "0"}  # the same vectors on every CPU


def index_args(folder: Path, db: Path) -> tuple:
    return ("index", folder, "--uri", db, "--batch-size", "8", "--write-every", "8", "-q")


def start_index(folder: Path, db: Path) -> subprocess.Popen:
    """``textimg index`` in a process of its own, writing 8 rows at a time."""
    return subprocess.Popen(textimg_command(*index_args(folder, db)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def rows_now(db: Path, at_least: int) -> bool:
    """True once the file's service holds at least ``at_least`` rows of the collection."""
    state = read_state(resolved_path(db))
    if state is None:
        return False
    client = connect(str(db))
    try:
        return COLLECTION in client.list_collections() and count_rows(client, COLLECTION) >= at_least
    finally:
        client.close()


def stats_rows(db: Path) -> int:
    """What ``textimg stats`` says, after the service stopped: the rows the file itself holds."""
    stop_service(db)
    run = run_textimg("stats", "--uri", db)
    assert run.code == 0, run.err
    return int(run.out.split()[0].removeprefix("rows="))


@contextmanager
def immutable(path: Path):
    """``chattr +i`` on ``path`` inside the block (root only: skip where it cannot be made)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and e2fsprogs")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def small_disk(folder: Path, size: str = "4m"):
    """A ``tmpfs`` of ``size`` mounted on ``folder`` inside the block (root only)."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        stop_services_under(folder)
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_folder_made_read_only_during_index_fails_in_one_line_and_loses_nothing_saved(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=25)  # 1,000 images
    db = tmp_path / "db" / "m.db"
    run = start_index(folder, db)
    wait_for(lambda: rows_now(db, 16), timeout=120, what="the first rows")
    with immutable(db.parent):
        out, err = run.communicate(timeout=300)
        assert run.returncode == 1, (out, err)
        assert "indexed=" not in out  # never a success line
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"textimg: error: cannot write to {db.parent}: read-only"), err
        again = run_textimg(*index_args(folder, db), env=ENV)  # the folder is still read-only
        assert again.code == 1 and "cannot write to" in again.last_err and "Traceback" not in again.err
    saved = stats_rows(db)
    assert 16 <= saved < 1000  # what the file holds: the rows confirmed before the fault
    fixed = run_textimg(*index_args(folder, db), env=ENV)
    assert fixed.code == 0, fixed.err
    assert fixed.summary == {"indexed": 1000 - saved, "skipped": 0, "unchanged": saved, "total": 1000}
    assert stats_rows(db) == 1000


def test_a_disk_that_fills_during_index_fails_in_one_line_and_loses_nothing_saved(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=25)
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "m.db"
        run = start_index(folder, db)
        wait_for(lambda: rows_now(db, 16), timeout=120, what="the first rows")
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 1, (out, err)
        assert "indexed=" not in out
        assert err.strip().splitlines()[-1].startswith("textimg: error: cannot write to "), err
        assert "disk full" in err.strip().splitlines()[-1], err
        saved = stats_rows(db)
        assert 16 <= saved < 1000
        filler.unlink()
        fixed = run_textimg(*index_args(folder, db), env=ENV)
        assert fixed.code == 0, fixed.err
        assert fixed.summary["total"] == 1000 and fixed.summary["unchanged"] == saved
        assert stats_rows(db) == 1000


def test_an_unwritable_database_file_is_searched_but_not_indexed_into(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=1)
    db = tmp_path / "m.db"
    assert run_textimg(*index_args(folder, db), env=ENV).code == 0
    stop_service(db)
    (folder / "new.png").write_bytes((folder / "red_circle_0000.png").read_bytes())
    with immutable(db):
        found = run_textimg("search", "a red circle", "--uri", db, "-k", "1", env=ENV)
        assert found.code == 0 and "red_circle" in found.out, found.err
        refused = run_textimg(*index_args(folder, db), env=ENV)
        assert refused.code == 1
        assert refused.last_err == f"textimg: error: cannot write to {db}: read-only (Operation not permitted)"
    assert run_textimg(*index_args(folder, db), env=ENV).summary["total"] == 41


def test_a_read_only_folder_is_one_line_that_names_the_fix_and_its_service_stops_cleanly(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=1)
    db = tmp_path / "db" / "m.db"
    assert run_textimg(*index_args(folder, db), env=ENV).code == 0
    with immutable(db.parent):
        assert run_textimg("search", "a red circle", "--uri", db, env=ENV).code == 0  # its service runs
        stop_service(db)  # stopping it in a read-only folder
        wait_for(lambda: not services_of(resolved_path(db)), what="the service to stop")
        log = log_file(resolved_path(db)).read_text()
        assert "Traceback" not in log, log
        refused = run_textimg("search", "a red circle", "--uri", db, env=ENV)
        assert refused.code == 1 and "Traceback" not in refused.err
        assert refused.last_err.startswith(f"textimg: error: cannot write to {db.parent}: read-only"), refused.err
        assert "copy the file to a writable folder" in refused.last_err


def test_a_deleted_database_is_never_answered_from(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=2)  # 80 images
    db = tmp_path / "m.db"
    assert run_textimg(*index_args(folder, db), env=ENV).summary["total"] == 80
    held = connect(str(db))  # a client held across the deletion (a notebook's panel)
    old = read_state(resolved_path(db))
    db.unlink()
    gone = run_textimg("stats", "--uri", db, env=ENV)
    assert gone.code == 1 and gone.last_err.startswith(f"textimg: error: no Milvus Lite file at {db}")
    again = run_textimg(*index_args(folder, db), env=ENV)  # starts afresh on a new file
    assert again.summary == {"indexed": 80, "skipped": 0, "unchanged": 0, "total": 80}
    assert not psutil.pid_exists(old["pid"]) or psutil.Process(old["pid"]).create_time() != old["started"]
    assert count_rows(held, COLLECTION) == 80  # the held client follows the file now there
    held.close()
    assert stats_rows(db) == 80


def test_a_replaced_database_is_served_as_the_file_now_is(tmp_path):
    small, large = shapes_folder(tmp_path / "small", per_class=1), shapes_folder(tmp_path / "large", per_class=2)
    db, other = tmp_path / "m.db", tmp_path / "other.db"
    assert run_textimg(*index_args(large, other), env=ENV).summary["total"] == 80
    stop_service(other)
    assert run_textimg(*index_args(small, db), env=ENV).summary["total"] == 40  # its service keeps running
    shutil.copy(other, tmp_path / "copy.db")
    os.replace(tmp_path / "copy.db", db)  # a restore from backup, under the running service
    stats = run_textimg("stats", "--uri", db, env=ENV)
    assert stats.code == 0 and stats.out.startswith("rows=80 "), stats.out


def test_killing_the_milvus_binary_during_index_is_retried_without_a_false_in_use(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=25)
    db = tmp_path / "m.db"
    run = start_index(folder, db)
    wait_for(lambda: rows_now(db, 16), timeout=120, what="the first rows")
    pid = read_state(resolved_path(db))["pid"]
    binaries = [p for p in psutil.Process(pid).children() if Path(p.exe()).name == "milvus"]
    assert len(binaries) == 1
    binaries[0].send_signal(signal.SIGKILL)
    out, err = run.communicate(timeout=300)
    assert "in use by another process" not in err, err
    assert "Traceback" not in err
    if run.returncode != 0:  # it may stop with one line; the same command then completes
        assert err.strip().splitlines()[-1].startswith("textimg: error: "), err
    again = run_textimg(*index_args(folder, db), env=ENV)
    assert again.code == 0, again.err
    assert again.summary["total"] == 1000 and "in use" not in again.err
    client = connect(str(db))
    rows = client.query(COLLECTION, filter="", output_fields=["filepath"], limit=2000)
    client.close()
    assert len(rows) == len({row["filepath"] for row in rows}) == 1000
    assert stats_rows(db) == 1000


def test_a_collection_dropped_during_index_is_one_line(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", per_class=25)
    db = tmp_path / "m.db"
    run = start_index(folder, db)
    wait_for(lambda: rows_now(db, 16), timeout=120, what="the first rows")
    dropped = run_textimg("drop", "--uri", db, "--yes", env=ENV)
    assert dropped.code == 0, dropped.err
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, (out, err)
    assert err.strip().splitlines()[-1] == (
        f"textimg: error: collection {COLLECTION!r} was dropped while this index ran: run the same "
        "command again to index the folder into a new one"), err
    assert run_textimg(*index_args(folder, db), env=ENV).summary["total"] == 1000
