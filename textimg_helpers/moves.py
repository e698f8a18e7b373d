"""Resolving groups of duplicates: one image kept per group, the others moved to a folder, and undone.

The rule every move keeps: **each group's photo still has a copy in the library afterwards.** Just
before each move the kept image is checked to be there, outside the folder of extras, and the same
file as when the groups were found (size, modification time and digest), and the extra to be a
regular file unchanged since then and not the kept file itself seen through another path (a hard
link, a bind mount: the same device and inode). Whatever fails a check is left where it is and said
in one line. Images already in a folder of extras (one holding a ``textimg-moved.csv``) are never kept
nor moved again.

A move is written to the list before it happens (state ``moving``, with the file's size and SHA-256,
synced), then made without ever overwriting a file: a hard link then the old name removed, or across
file systems a copy under a temporary name, synced and checked, then renamed; then listed ``moved``.
``undo_moves`` puts back only what a list names, from inside the list's own folder, still the same
bytes; a second undo finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .config import TextimgError
from .data import file_digest
from .duplicates import NEAR_IDENTICAL, keeper, tier
from .hits import Hit
from .store import file_metadata, has_metadata, path_id

__all__ = ["MOVED_LIST", "MoveFailed", "move_extras", "undo_moves"]

MOVED_LIST = "textimg-moved.csv"
LIST_FIELDS = ["old_path", "new_path", "group", "tier", "score", "size", "sha256", "state"]
PARTIAL = ".textimg-partial"  # a copy across file systems is written as .<name>.textimg-partial first
CHUNK = 1 << 20


class MoveFailed(TextimgError):
    """A move that could not be made (disk full, permission): the file is still in its place."""


# Checks: what a file is now against what it was when the groups were found ------------------------

@dataclass(frozen=True)
class FileNow:
    """A file as it is now: ``lstat`` (a link is not followed) and its digest (``data.file_digest``)."""

    path: str
    st: os.stat_result | None
    digest: str = ""

    @classmethod
    def of(cls, path: str) -> "FileNow":
        try:
            st = os.lstat(path)
        except OSError:
            return cls(path, None)
        return cls(path, st, file_digest(path) if stat.S_ISREG(st.st_mode) else "")

    def same_file(self, other: "FileNow") -> bool:
        return self.st is not None and other.st is not None and \
            (self.st.st_dev, self.st.st_ino) == (other.st.st_dev, other.st.st_ino)


def changed_since_scan(now: FileNow, hit: Hit) -> str | None:
    """Why ``now`` is not the file the group was made of (``None``: it is): gone, not a regular file,
    another size, modification time or digest than its row says."""
    if now.st is None:
        return "it is not there any more"
    if not stat.S_ISREG(now.st.st_mode):
        return "it is not a regular file now"
    meta = hit.meta
    if ("size" in meta and now.st.st_size != meta["size"]) or ("mtime" in meta and now.st.st_mtime_ns != meta["mtime"]) \
            or (meta.get("digest") and now.digest != meta["digest"]):
        return "it changed since the duplicates were found (index the folder again)"
    return None


class MovedFolders:
    """Whether a path lies in a folder of extras: ``target``, or any folder holding a ``MOVED_LIST``
    (an earlier ``--move-extras-to``); each folder is looked at once."""

    def __init__(self, target: Path):
        self.target, self.seen = target, {}

    def holds(self, path: str) -> bool:
        return any(self.is_extras_folder(folder) for folder in Path(path).parents)

    def is_extras_folder(self, folder: Path) -> bool:
        if folder not in self.seen:
            self.seen[folder] = folder == self.target or (folder / MOVED_LIST).is_file()
        return self.seen[folder]


# Moving one file, never overwriting, never leaving half a file -------------------------------------

def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def move_file(source: Path, target: Path, size: int, sha256: str) -> None:
    """Move ``source`` to ``target`` (folders made as needed), which must not exist: a hard link then the
    old name removed; where that cannot be (another file system, no hard links), ``copy_checked``.
    Raises ``MoveFailed`` with ``source`` still in place and nothing left at ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise MoveFailed(f"{target} exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise MoveFailed(exc.strerror or str(exc)) from None
        copy_checked(source, target, size, sha256)
    sync_folder(target.parent)
    try:
        os.unlink(source)
    except OSError as exc:  # the old name cannot go (a read-only folder): the new one goes instead
        os.unlink(target)
        raise MoveFailed(f"cannot remove it from its folder: {exc.strerror or exc}") from None
    sync_folder(source.parent)


def copy_checked(source: Path, target: Path, size: int, sha256: str) -> None:
    """Copy ``source`` to ``.<name>.textimg-partial`` beside ``target``, sync it, check its size and
    SHA-256, then give it ``target``'s name (refused if taken); on any failure the partial is removed."""
    partial = target.with_name(f".{target.name}{PARTIAL}")
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(partial, "xb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.utime(partial, ns=(os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns))
        if os.path.getsize(partial) != size or digest.hexdigest() != sha256:
            raise MoveFailed("the copy does not match the original (it changed while being copied?)")
        os.link(partial, target)  # like rename, but never over an existing file
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise MoveFailed(f"{target} exists") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise MoveFailed(exc.strerror or str(exc)) from None
    except MoveFailed:
        partial.unlink(missing_ok=True)
        raise
    partial.unlink()


def sync_folder(folder: Path) -> None:
    """Make a folder's new or removed names durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The list: one line before each move, one after ---------------------------------------------------

class MoveList:
    """``DIR/textimg-moved.csv``, appended to: each line synced before the next step is taken."""

    def __init__(self, path: Path):
        self.path, new = path, not path.exists()
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.write(LIST_FIELDS)

    def write(self, values: Sequence) -> None:
        self.writer.writerow(values)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def rename_row(client, collection_name: str, old: str, new: str) -> None:
    """The row of a file now at ``new``: the same vector and metadata, its new path and id."""
    found = client.get(collection_name, ids=[path_id(old)], output_fields=["*"])
    if not found:
        return
    row = {**dict(found[0]), "filepath": new, "id": path_id(new)}
    if "taken" in row or has_metadata(client, collection_name):
        row.update(file_metadata(row))
    client.upsert(collection_name, [row])
    client.delete(collection_name, ids=[path_id(old)])


# Resolving groups ---------------------------------------------------------------------------------

@dataclass
class Mover:
    """One ``move_extras`` run: where the extras go, the list, what was moved, how to say things."""

    client: object
    collection_name: str
    target: Path
    common: Path
    listing: MoveList
    say: object
    moved: int = 0

    def resolve(self, number: int, group: list[Hit], kind: str) -> None:
        """Keep ``keeper(group)``; move each other image whose checks pass."""
        kept = keeper(group)
        for hit in group:
            if hit is not kept:
                self.move_extra(number, kind, kept, hit)

    def move_extra(self, number: int, kind: str, kept: Hit, hit: Hit) -> None:
        """Check the kept image and the extra just before moving it; list, move, list, update its row."""
        kept_now, extra_now = FileNow.of(kept.filepath), FileNow.of(hit.filepath)
        why = changed_since_scan(kept_now, kept)
        if why:
            self.say(f"not moved {hit.filepath}: the image kept in its place, {kept.filepath}, is not safe: {why}")
            return
        why = changed_since_scan(extra_now, hit) or (
            f"it is the same file as {kept.filepath} (a link)" if extra_now.same_file(kept_now) else None)
        if why:
            self.say(f"not moved {hit.filepath}: {why}")
            return
        new = self.target / Path(hit.filepath).relative_to(self.common)
        if os.path.lexists(new):
            self.say(f"not moved {hit.filepath}: {new} exists")
            return
        size, sha = extra_now.st.st_size, sha256_of(hit.filepath)
        line = [hit.filepath, str(new), number, kind, f"{hit.score:.4f}", size, sha]
        try:
            self.listing.write(line + ["moving"])
            move_file(Path(hit.filepath), new, size, sha)
        except (MoveFailed, OSError) as exc:
            with contextlib.suppress(OSError):
                self.listing.write(line + ["failed"])
            raise self.failed(hit.filepath, exc) from None
        rename_row(self.client, self.collection_name, hit.filepath, str(new))
        self.moved += 1
        self.say(f"moved {hit.filepath} -> {new}")
        try:
            self.listing.write(line + ["moved"])
        except OSError as exc:  # its "moving" line is enough for undo to find it
            raise MoveFailed(f"moved {hit.filepath}, then could not write the list: {exc.strerror or exc}; "
                             f"{self.moved} files were moved: undo them: textimg duplicates --undo "
                             f"{self.listing.path}") from None

    def failed(self, path: str, exc: Exception) -> TextimgError:
        undo = f"undo them: textimg duplicates --undo {self.listing.path}" if self.moved else "nothing was moved"
        reason = exc if isinstance(exc, MoveFailed) else f"cannot write the list: {exc.strerror or exc}"
        return MoveFailed(f"could not move {path}: {reason} (it is still in its place, no partial copy left); "
                          f"{self.moved} files were moved before it: {undo}")


def move_extras(client, collection_name: str, groups: list[list[Hit]], target: str | os.PathLike,
                near_identical: float = NEAR_IDENTICAL, say=print) -> tuple[int, int, Path]:
    """Keep one image per group (``keeper``) and move the others into ``target``, under their paths
    relative to the folder the groups' images share, each listed in ``target/textimg-moved.csv`` and
    its row updated to the new path; images in a folder of extras take no part. Every move keeps the
    rule of the module's docstring. Returns the files moved, the groups that took part (each keeps one
    image) and the list; ``MoveFailed`` stops the run
    at the first move that could not be made, saying how to undo the ones before it."""
    target = Path(target).expanduser().resolve()
    if not (target / MOVED_LIST).is_file() and any(
            target in Path(hit.filepath).parents for group in groups for hit in group):
        raise TextimgError(f"--move-extras-to {target}: that folder holds images of the library; name an empty "
                           "folder, or the folder of an earlier --move-extras-to")
    extras = MovedFolders(target)
    groups = [[hit for hit in group if not extras.holds(hit.filepath)] for group in groups]
    groups = [group for group in groups if len(group) > 1]
    paths = [hit.filepath for group in groups for hit in group]
    if not paths:
        return 0, 0, target / MOVED_LIST
    common = Path(os.path.commonpath(paths))
    common = common if common.is_dir() else common.parent
    target.mkdir(parents=True, exist_ok=True)
    mover = Mover(client, collection_name, target, common, MoveList(target / MOVED_LIST), say)
    try:
        for number, group in enumerate(groups, 1):
            mover.resolve(number, group, tier(group, near_identical))
    finally:
        mover.listing.close()
    return mover.moved, len(groups), target / MOVED_LIST


# Undoing: only what the list names, from its own folder, still the same bytes ---------------------

@dataclass
class Listed:
    """One file of a list: its last line (``state``) and what the list recorded of it."""

    old: Path
    new: Path
    state: str
    size: int | None
    sha256: str


def read_list(listing: Path) -> list[Listed]:
    """The files a list names, each once (its last line wins), in the order they were first listed."""
    try:
        with open(listing, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TextimgError(f"cannot read {listing}: {getattr(exc, 'strerror', None) or exc}") from None
    if not rows or not {"old_path", "new_path"} <= set(rows[0]):
        raise TextimgError(f"{listing} is not a list written by --move-extras-to (no old_path, new_path columns)")
    files: dict[tuple[str, str], Listed] = {}
    for row in rows:
        old, new = row.get("old_path") or "", row.get("new_path") or ""
        size = row.get("size") or ""
        files[old, new] = Listed(Path(old), Path(new), row.get("state") or "moved",
                                 int(size) if size.isdigit() else None, row.get("sha256") or "")
    return list(files.values())


def undo_refusal(item: Listed, folder: Path) -> str | None:
    """Why ``item`` may not be moved back (``None``: it may): its file must lie in the list's ``folder``,
    be a regular file with the recorded size and SHA-256, come from a path ending as it does in the
    folder, and its old place must be free, in a folder that exists."""
    if not item.old.is_absolute() or not item.new.is_absolute():
        return "the list names a relative path"
    real_parent = Path(os.path.realpath(item.new.parent))
    if real_parent != folder and folder not in real_parent.parents:
        return f"{item.new} is not inside the list's folder {folder}"
    tail = (real_parent / item.new.name).relative_to(folder).parts
    if item.new.name == MOVED_LIST or tuple(item.old.parts[-len(tail):]) != tail:
        return f"{item.new} was not moved there from {item.old}"
    try:
        st = os.lstat(item.new)
    except OSError:
        return f"{item.new} is not there"
    if not stat.S_ISREG(st.st_mode):
        return f"{item.new} is not a regular file"
    if item.size is None or not item.sha256:
        return "the list records no size and SHA-256 for it (move it back by hand)"
    if st.st_size != item.size or sha256_of(item.new) != item.sha256:
        return f"{item.new} is not the file that was moved (its size or SHA-256 differs)"
    if os.path.lexists(item.old):
        return "a file is there again"
    if not item.old.parent.is_dir():
        return f"its folder {item.old.parent} is gone: make it, then undo again"
    return None


def restored_already(item: Listed) -> bool:
    """The file is back in its old place, and nothing is left where it was moved."""
    if os.path.lexists(item.new) or not os.path.isfile(item.old):
        return False
    return item.sha256 == "" or sha256_of(item.old) == item.sha256


def finish_interrupted(item: Listed, folder: Path) -> None:
    """A move stopped half-way (the list says ``moving``, nothing after): a partial copy in ``folder`` is
    removed, and so is a second name there of the file still in its old place (the hard link made first)."""
    partial = item.new.with_name(f".{item.new.name}{PARTIAL}")
    real_parent = Path(os.path.realpath(item.new.parent))
    if os.path.isfile(item.old) and (real_parent == folder or folder in real_parent.parents):
        partial.unlink(missing_ok=True)
        if os.path.lexists(item.new) and FileNow.of(str(item.old)).same_file(FileNow.of(str(item.new))):
            os.unlink(item.new)


def undo_moves(client, collection_name: str, listing: str | os.PathLike, say=print) -> int:
    """Put back every file a ``move_extras`` list names that passes ``undo_refusal``, last first, and
    its row; anything else is refused by name and left where it is. Returns the files put back."""
    listing = Path(listing).expanduser().resolve()
    folder, restored = listing.parent, 0
    items = read_list(listing)
    out = MoveList(listing)
    try:
        for item in reversed(items):
            if item.state == "moving":
                finish_interrupted(item, folder)
            if item.state in ("failed", "restored") or restored_already(item):
                say(f"not restored {item.old}: {'not moved' if item.state == 'failed' else 'restored already'}")
                continue
            why = undo_refusal(item, folder)
            if why:
                say(f"not restored {item.old}: {why}")
                continue
            try:
                move_file(item.new, item.old, item.size, item.sha256)
            except MoveFailed as exc:
                raise MoveFailed(f"could not put back {item.old}: {exc} (it is still in {folder}); {restored} files "
                                 f"were put back before it: undo again once that is fixed") from None
            out.write([item.old, item.new, "", "", "", item.size, item.sha256, "restored"])
            rename_row(client, collection_name, str(item.new), str(item.old))
            say(f"restored {item.old}")
            restored += 1
    finally:
        out.close()
    return restored
