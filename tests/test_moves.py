"""Resolving duplicates never loses a photo: after ``--move-extras-to`` every photo still has a copy in the
library, in the hostile cases too (links, a second run, a file changed or gone since the scan, a full
disk, a kill -9, a crafted list), and ``--undo`` moves back only what it moved.

Each test builds a small library of generated images, indexes it with the shapes model and checks the
files themselves (their bytes), not only what the command prints.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, SHAPES_COLLECTION, noise
from textimg_helpers.shapes import generate_shapes

LIST = "textimg-moved.csv"


def digests(folder: Path, leave_out: Path | None = None) -> dict[str, str]:
    """``{path relative to folder: sha256}`` of every file under ``folder`` (but ``leave_out``)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and (leave_out is None or leave_out not in p.parents)}


def photos(folder: Path, leave_out: Path | None = None) -> set[str]:
    """The distinct photos (by their bytes) with a copy under ``folder``."""
    return set(digests(folder, leave_out).values())


def star_library(root: Path, copies=("b/star_copy.jpg",)) -> Path:
    """``Pictures/``: four distinct shapes, ``a/star.jpg`` (a green star photo) and byte copies of it."""
    folder = root / "Pictures"
    generate_shapes(root / "shapes", per_class=1, size=96)
    for name in ("red_circle", "blue_square", "yellow_triangle", "purple_cross"):
        (folder / "shapes").mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "shapes" / f"{name}_0000.png", folder / "shapes" / f"{name}.png")
    (folder / "a").mkdir()
    Image.open(root / "shapes" / "green_star_0000.png").convert("RGB").save(folder / "a" / "star.jpg", quality=95)
    for copy in copies:
        (folder / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / "a" / "star.jpg", folder / copy)
    shutil.rmtree(root / "shapes")
    return folder


def moved_rows(listing: Path, state: str = "moved") -> list[dict]:
    with open(listing, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["state"] == state]


def all_paths(cli, db) -> list[str]:
    run = cli("search", "a green star", "--uri", db, "-k", 100, "--json")
    assert run.code == 0, run.err
    return sorted(hit["filepath"] for hit in json.loads(run.out))


def move(cli, db, target, *more):
    return cli("duplicates", "--uri", db, "--threshold", "0.97", "--move-extras-to", target, *more)


# --- one file seen through two paths -----------------------------------------------------------------

def test_a_linked_folder_is_stored_under_its_real_path_and_never_moved_as_its_own_copy(cli, tmp_path):
    other = star_library(tmp_path / "o", copies=()).rename(tmp_path / "Other")
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    Image.new("RGB", (96, 96), (0, 0, 255)).save(pictures / "own.png")
    (pictures / "ext").symlink_to("../Other", target_is_directory=True)
    (pictures / "loop").symlink_to("..", target_is_directory=True)  # the parent holds Other/ and outside.png
    Image.new("RGB", (96, 96), (255, 255, 0)).save(tmp_path / "outside.png")
    db = tmp_path / "m.db"
    assert cli("index", pictures, "--uri", db, "-q").summary["total"] == 1 + 5
    assert cli("index", other, "--uri", db, "-q").summary == {"indexed": 0, "skipped": 0, "unchanged": 5, "total": 6}
    paths = all_paths(cli, db)
    assert paths == sorted([str(pictures / "own.png"), *(str(p) for p in other.rglob("*.*") if p.is_file())])
    assert not any("/ext/" in p or "/loop/" in p or p.endswith("outside.png") for p in paths)
    before = digests(tmp_path)
    run = move(cli, db, tmp_path / "extras")
    assert run.code == 0 and "moved=0 " in run.last_err, run.err
    assert digests(tmp_path, tmp_path / "extras") == before  # Other/ untouched


def test_a_hard_link_or_a_bind_mount_is_the_same_file_not_a_copy(cli, tmp_path):
    folder = star_library(tmp_path, copies=())
    os.link(folder / "a" / "star.jpg", folder / "star_link.jpg")  # one file, two names
    bound = None
    if os.geteuid() == 0:
        (folder / "bound").mkdir()
        if subprocess.run(["mount", "--bind", str(folder / "a"), str(folder / "bound")]).returncode == 0:
            bound = folder / "bound"
    try:
        db = tmp_path / "m.db"
        assert cli("index", folder, "--uri", db, "-q").code == 0
        groups = json.loads(cli("duplicates", "--uri", db, "--json", "--threshold", "0.97").out)
        assert len(groups) == 1 and groups[0]["tier"] == "identical"
        assert groups[0]["size"] == (3 if bound else 2)
        before = digests(folder)
        run = move(cli, db, tmp_path / "extras")
        assert run.code == 0 and "moved=0 kept=1 " in run.last_err, run.err
        assert run.err.count("(a link)") == (2 if bound else 1)
        assert os.path.samefile(folder / "a" / "star.jpg", folder / "star_link.jpg")
        assert digests(folder) == before
    finally:
        if bound:
            subprocess.run(["umount", str(bound)], check=True)
    if not bound:
        pytest.skip("hard link checked; a bind mount needs root and mount(8)")


# --- a second run ------------------------------------------------------------------------------------

def test_a_second_run_moves_nothing_and_never_takes_the_last_copy(cli, tmp_path):
    folder = star_library(tmp_path, copies=("b/star_copy.jpg", "c/deeper/star_copy2.jpg"))
    db, extras = tmp_path / "m.db", tmp_path / "extras"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    before = photos(folder)
    first = move(cli, db, extras)
    assert first.code == 0 and "moved=2 kept=1 " in first.last_err, first.err
    assert photos(folder) == before and (folder / "a" / "star.jpg").exists()  # the shortest path is kept
    for _ in range(2):
        again = move(cli, db, extras)
        assert again.code == 0 and "moved=0 kept=0 " in again.last_err, again.err
    other = move(cli, db, tmp_path / "extras2")  # another folder: the first one's copies still take no part
    assert other.code == 0 and "moved=0 kept=0 " in other.last_err, other.err
    assert photos(folder) == before
    assert sorted(digests(extras)) == ["b/star_copy.jpg", "c/deeper/star_copy2.jpg", LIST]  # no extras/extras/...
    assert len(moved_rows(extras / LIST)) == 2


def test_a_folder_of_library_photos_is_refused_as_the_target(cli, tmp_path):
    folder = star_library(tmp_path)
    db = tmp_path / "m.db"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    before = digests(folder)
    run = move(cli, db, folder / "b")
    assert run.code != 0 and "that folder holds images of the library" in run.last_err, run.err
    assert digests(folder) == before


# --- files gone or changed since the scan -----------------------------------------------------------

def test_a_kept_file_gone_leaves_its_group_and_a_gone_extra_is_one_line(cli, tmp_path):
    folder = star_library(tmp_path, copies=("b/star_copy.jpg", "c/star_copy.jpg"))
    db, extras = tmp_path / "m.db", tmp_path / "extras"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    (folder / "a" / "star.jpg").unlink()  # the one the shortest-path rule keeps
    run = move(cli, db, extras)
    assert run.code == 0 and "moved=0 kept=1 " in run.last_err, run.err
    assert f"the image kept in its place, {folder / 'a' / 'star.jpg'}, is not safe: it is not there any more" in run.err
    assert (folder / "b" / "star_copy.jpg").exists() and (folder / "c" / "star_copy.jpg").exists()
    assert cli("index", folder, "--uri", db, "-q").code == 0  # the row of the deleted file goes
    (folder / "c" / "star_copy.jpg").unlink()
    shutil.copy2(folder / "b" / "star_copy.jpg", folder / "a" / "star.jpg")
    assert cli("index", folder, "--uri", db, "-q").code == 0
    (folder / "b" / "star_copy.jpg").unlink()  # an extra gone since the scan... of the next command
    groups = json.loads(cli("duplicates", "--uri", db, "--json", "--threshold", "0.97").out)
    assert [len(g["images"]) for g in groups] == [2]
    run = move(cli, db, extras)
    assert run.code == 0 and "Traceback" not in run.err, run.err
    assert f"not moved {folder / 'b' / 'star_copy.jpg'}: it is not there any more" in run.err
    assert (folder / "a" / "star.jpg").exists()


def test_a_file_changed_after_the_scan_is_left_and_keeps_its_row(tmp_path, shapes_encoder):
    """The app's path: groups found, then a file replaced by another photo, then the move button."""
    from conftest import run_cli
    from textimg_helpers.duplicates import find_duplicates
    from textimg_helpers.milvus import connect
    from textimg_helpers.moves import move_extras

    folder = star_library(tmp_path, copies=("b/star_copy.jpg", "c/star_copy.jpg"))
    db = tmp_path / "m.db"
    assert run_cli("index", folder, "--uri", db, "-q").code == 0
    client = connect(str(db))
    groups, _ = find_duplicates(client, SHAPES_COLLECTION, 0.97)
    stored = client.query(SHAPES_COLLECTION, filter=f'filepath == "{folder / "c" / "star_copy.jpg"}"',
                          output_fields=["vector"])[0]["vector"]
    noise(size=(96, 96), seed=3).save(folder / "c" / "star_copy.jpg", format="JPEG")  # another photo, same name
    said = []
    moved, kept, listing = move_extras(client, SHAPES_COLLECTION, groups, tmp_path / "extras", say=said.append)
    assert (moved, kept) == (1, 1)
    assert f"not moved {folder / 'c' / 'star_copy.jpg'}: it changed since the duplicates were found" in "\n".join(said)
    assert (folder / "c" / "star_copy.jpg").exists() and (folder / "a" / "star.jpg").exists()
    row = client.query(SHAPES_COLLECTION, filter=f'filepath == "{folder / "c" / "star_copy.jpg"}"',
                       output_fields=["vector"])
    assert row and row[0]["vector"] == stored  # untouched: the next index re-reads it
    Image.new("RGB", (96, 96), (9, 9, 9)).save(folder / "a" / "star.jpg", format="JPEG")  # the kept one changes
    groups, _ = find_duplicates(client, SHAPES_COLLECTION, 0.97)
    said.clear()
    assert move_extras(client, SHAPES_COLLECTION, groups, tmp_path / "extras", say=said.append)[0] == 0 or not groups


# --- moves that fail half-way ---------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB tmpfs at ``tmp_path/extras`` (another file system, soon full); root only."""
    target = tmp_path / "extras"
    target.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)]).returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    yield target
    subprocess.run(["umount", str(target)], check=True)


def test_a_full_disk_on_another_file_system_leaves_no_partial_file_and_says_how_to_undo(cli, tmp_path, small_disk):
    folder = star_library(tmp_path)
    big = noise(size=(700, 700), seed=5)
    (folder / "z").mkdir()
    big.save(folder / "z" / "noise.png")  # about 1.5 MB: more than the disk holds
    shutil.copy2(folder / "z" / "noise.png", folder / "z" / "noise_copy_longer_name.png")
    db = tmp_path / "m.db"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    before, tree = photos(folder), digests(folder)
    run = move(cli, db, small_disk)
    assert run.code != 0
    assert "noise_copy_longer_name.png: No space left on device (it is still in its place, no partial copy left)" \
        in run.last_err, run.err
    assert f"1 files were moved before it: undo them: textimg duplicates --undo {small_disk / LIST}" in run.last_err
    assert photos(folder) == before
    assert sorted(digests(small_disk)) == ["b/star_copy.jpg", LIST]  # no partial copy, hidden or not
    assert [row["state"] for row in csv.DictReader(open(small_disk / LIST))][-1] == "failed"
    undone = cli("duplicates", "--uri", db, "--undo", small_disk / LIST)
    assert undone.code == 0 and undone.out.startswith("restored=1 "), undone.err
    assert digests(folder) == tree


KILL_AFTER_LINK = """
import os, signal, sys
from textimg_helpers import cli, moves
moves.sync_folder = lambda folder: os.kill(os.getpid(), signal.SIGKILL)  # after the link, before the old name goes
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_move_killed_half_way_is_listed_and_undone(cli, tmp_path):
    folder = star_library(tmp_path)
    db, extras = tmp_path / "m.db", tmp_path / "extras"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    tree = digests(folder)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_LINK, "duplicates", "--uri", str(db), "--threshold",
                             "0.97", "--move-extras-to", str(extras)], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert [row["old_path"] for row in moved_rows(extras / LIST, "moving")] == [str(folder / "b" / "star_copy.jpg")]
    assert digests(folder) == tree  # killed between the link and the removal: both names hold the photo
    undone = cli("duplicates", "--uri", db, "--undo", extras / LIST)
    assert undone.code == 0, undone.err
    assert digests(folder) == tree and sorted(digests(extras)) == [LIST]
    assert str(folder / "b" / "star_copy.jpg") in all_paths(cli, db)


# --- undo: only what the list owns -----------------------------------------------------------------

def test_undo_moves_back_only_listed_files_inside_its_folder_with_their_bytes(cli, tmp_path):
    folder = star_library(tmp_path, copies=("b/star_copy.jpg", "c/star_copy.jpg"))
    db, extras = tmp_path / "m.db", tmp_path / "extras"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    tree = digests(folder)
    assert "moved=2 " in move(cli, db, extras).last_err
    rows = moved_rows(extras / LIST)
    fields = list(rows[0])
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes(b"not yours")
    (extras / "a-folder").mkdir()
    changed = Path(rows[1]["new_path"])
    crafted = [
        {**rows[0], "new_path": str(outside)},  # a file outside the list's folder
        {**rows[0], "new_path": str(extras / "a-folder"), "old_path": str(tmp_path / "x" / "a-folder")},
        {**rows[0], "old_path": str(tmp_path / "elsewhere" / "star_copy.jpg")},  # not where it came from
        {**rows[0], "old_path": str(tmp_path / "gone" / "b" / "star_copy.jpg")},  # a folder that is not there
        {**rows[0], "old_path": "b/star_copy.jpg", "new_path": "b/star_copy.jpg"},  # relative
        {**rows[0], "new_path": str(extras / ".." / "elsewhere" / "secret.jpg")},
    ]
    with open(extras / "crafted.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(crafted)
    run = cli("duplicates", "--uri", db, "--undo", extras / "crafted.csv")
    assert run.code == 0 and run.out.startswith("restored=0 "), run.err
    assert run.err.count("not restored") == len(crafted)
    for why in ("is not inside the list's folder", "is not a regular file", "was not moved there from",
                "the list names a relative path", f"its folder {tmp_path / 'gone' / 'b'} is gone"):
        assert why in run.err, why
    assert outside.read_bytes() == b"not yours" and (extras / "a-folder").is_dir()
    assert sorted(digests(tmp_path / "elsewhere")) == ["secret.jpg"] and not (tmp_path / "x").exists()
    assert not (tmp_path / "gone").exists()
    changed.write_bytes(changed.read_bytes() + b"\0")  # a moved file changed in the folder of extras
    run = cli("duplicates", "--uri", db, "--undo", extras / LIST)
    assert run.code == 0 and run.out.startswith("restored=1 "), run.err
    assert f"{changed} is not the file that was moved (its size or SHA-256 differs)" in run.err
    changed.write_bytes(changed.read_bytes()[:-1])
    run = cli("duplicates", "--uri", db, "--undo", extras / LIST)
    assert run.out.startswith("restored=1 ") and digests(folder) == tree, run.err
    again = cli("duplicates", "--uri", db, "--undo", extras / LIST)
    assert again.code == 0 and again.out.startswith("restored=0 ") and "restored already" in again.err
    assert digests(folder) == tree
    assert sorted(all_paths(cli, db)) == sorted(str(folder / p) for p in tree)  # the rows followed


def test_a_list_with_no_recorded_bytes_is_refused_by_name(cli, tmp_path):
    folder = star_library(tmp_path)
    db, extras = tmp_path / "m.db", tmp_path / "extras"
    assert cli("index", folder, "--uri", db, "-q").code == 0
    assert "moved=1 " in move(cli, db, extras).last_err
    row = moved_rows(extras / LIST)[0]
    with open(extras / "old.csv", "w", newline="") as f:  # the columns of lists written before size and sha256
        f.write("old_path,new_path,group,tier,score\n")
        csv.writer(f).writerow([row["old_path"], row["new_path"], 1, "identical", "1.0000"])
    run = cli("duplicates", "--uri", db, "--undo", extras / "old.csv")
    assert run.out.startswith("restored=0 ") and "records no size and SHA-256" in run.err
    assert Path(row["new_path"]).exists()
