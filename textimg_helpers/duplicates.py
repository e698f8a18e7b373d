"""Near-duplicate images: groups of stored vectors within a cosine threshold (no model is loaded).

Two images are linked when the cosine of their stored vectors is at least ``threshold``; a group is
every image reachable through such links (single linkage, union-find). The vectors are read from
the collection and compared block by block with numpy: an exact all-pairs comparison
(``benchmarks/README.md`` compares it with Milvus range search). Each group has a tier: identical
files (the same bytes), near-identical (every image at a cosine of at least ``NEAR_IDENTICAL`` to the
first), or similar. ``move_extras`` resolves groups: one image kept per group, the others moved to a
folder with a list that ``undo_moves`` reads to put them back; nothing is deleted.
"""

from __future__ import annotations

import csv
import filecmp
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from pymilvus import MilvusException

from .config import TextimgError
from .hits import Hit
from .milvus import pymilvus_errors_unlogged
from .store import check_filter, file_metadata, filter_refused, has_metadata, path_id

DEFAULT_THRESHOLD = 0.95
NEAR_IDENTICAL = 0.98  # a group whose images all are at least this close to its first is near-identical
MOVED_LIST = "textimg-moved.csv"
KEEP_FIELDS = ("digest", "width", "height", "taken")  # what tiers and the choice of the image to keep read
BLOCK_SIZE = 512  # rows compared at once: a (BLOCK_SIZE, n) float32 matrix, 200 MB at n = 100,000
READ_BATCH = 256  # rows per page of query_iterator (see benchmarks/README.md for the page sizes tried)


def read_vectors(client, collection_name: str, filter: str = "",
                 batch_size: int = READ_BATCH) -> tuple[list[dict], np.ndarray]:
    """Every row's ``id``, ``filepath`` and ``label``, and its stored vector: (rows, image_embs (n, dim))."""
    rows, pages_of_embs = [], []
    check_filter(filter)
    extra = list(KEEP_FIELDS) if has_metadata(client, collection_name) else []
    try:
        with pymilvus_errors_unlogged():  # its iterator logs a warning about timestamps on Milvus Lite
            pages = client.query_iterator(collection_name, batch_size=batch_size, filter=filter,
                                          output_fields=["filepath", "label", "vector", *extra])
            try:
                while page := pages.next():
                    pages_of_embs.append(np.array([row.pop("vector") for row in page], dtype=np.float32))
                    rows += page
            finally:
                pages.close()
    except MilvusException as exc:
        raise filter_refused("to read the rows", filter, exc) from None
    image_embs = np.concatenate(pages_of_embs) if pages_of_embs else np.zeros((0, 0), np.float32)
    return rows, image_embs


def linked_pairs(image_embs: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                 block_size: int = BLOCK_SIZE):
    """Yield ``(i, j)`` index arrays (i < j) of the pairs whose cosine is at least ``threshold``."""
    image_embs = np.ascontiguousarray(image_embs, dtype=np.float32)
    for start in range(0, len(image_embs), block_size):
        block = image_embs[start:start + block_size]
        sims = block @ image_embs[start:].T  # this block against itself and every later row
        i, j = np.nonzero(sims >= threshold)
        later = j > i  # each pair once, no row with itself
        yield i[later] + start, j[later] + start


def group_rows(image_embs: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
               block_size: int = BLOCK_SIZE) -> list[list[int]]:
    """Row indices of each group of near-duplicates (2 or more rows), biggest groups first."""
    parent = np.arange(len(image_embs))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i_s, j_s in linked_pairs(image_embs, threshold, block_size):
        for i, j in zip(i_s.tolist(), j_s.tolist()):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(image_embs)):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def rank_group(rows: Sequence[dict], image_embs: np.ndarray, group: Sequence[int]) -> list[Hit]:
    """One group as hits: first the image closest to all the others, then the rest by their cosine
    to it (``score``), ties by path."""
    sims = image_embs[group] @ image_embs[group].T
    first = max(range(len(group)), key=lambda k: (sims[k].sum(), -k))
    hits = [Hit(rows[i]["filepath"], rows[i]["label"], float(sims[first, k]), int(rows[i]["id"]),
                {key: rows[i][key] for key in KEEP_FIELDS if key in rows[i]}) for k, i in enumerate(group)]
    return [hits[first]] + sorted(hits[:first] + hits[first + 1:], key=lambda h: (-h.score, h.filepath))


def find_duplicates(client, collection_name: str, threshold: float = DEFAULT_THRESHOLD,
                    filter: str = "") -> tuple[list[list[Hit]], int]:
    """Groups of near-duplicate images in a collection, biggest first, and the number of rows read."""
    rows, image_embs = read_vectors(client, collection_name, filter)
    order = sorted(range(len(rows)), key=lambda i: rows[i]["filepath"])  # same groups whatever Milvus' order
    rows, image_embs = [rows[i] for i in order], image_embs[order] if order else image_embs
    return [rank_group(rows, image_embs, g) for g in group_rows(image_embs, threshold)], len(rows)


# Tiers, and resolving groups ----------------------------------------------------------------------

def tier(group: Sequence[Hit], near_identical: float = NEAR_IDENTICAL) -> str:
    """``identical`` (every file has the same bytes), ``near-identical`` (every image at a cosine of at
    least ``near_identical`` to the first) or ``similar``."""
    digests = {hit.meta.get("digest") for hit in group}
    if len(digests) == 1 and None not in digests and all(
            same_bytes(group[0].filepath, hit.filepath) for hit in group[1:]):
        return "identical"
    return "near-identical" if min(hit.score for hit in group) >= near_identical else "similar"


def same_bytes(a: str, b: str) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def keeper(group: Sequence[Hit]) -> Hit:
    """The image a group keeps: the most pixels, then the earliest date taken, then the shortest path."""
    return min(group, key=lambda hit: (-(hit.meta.get("width") or 0) * (hit.meta.get("height") or 0),
                                       hit.meta.get("taken") or 0, len(hit.filepath), hit.filepath))


def move_extras(client, collection_name: str, groups: list[list[Hit]], target: str | os.PathLike,
                near_identical: float = NEAR_IDENTICAL, say=print) -> tuple[int, Path]:
    """Keep one image per group (``keeper``); move the others into ``target`` under their paths relative
    to the folder all the groups' images share, list each move in ``target/textimg-moved.csv`` (old
    path, new path, group, tier, score: appended to), and update their rows to the new paths. A file
    whose new path is taken is left where it is, and said so. Returns the files moved and the list."""
    target = Path(target).expanduser().resolve()
    paths = [hit.filepath for group in groups for hit in group]
    if not paths:
        return 0, target / MOVED_LIST
    common = Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent
    common = common if common.is_dir() else common.parent
    if any(Path(p).parent == target for p in paths):
        raise TextimgError(f"--move-extras-to {target}: that folder holds images of the groups; name another one")
    target.mkdir(parents=True, exist_ok=True)
    listing = target / MOVED_LIST
    new_list = not listing.exists()
    moved = 0
    with open(listing, "a", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        if new_list:
            writer.writerow(["old_path", "new_path", "group", "tier", "score"])
        for number, group in enumerate(groups, 1):
            kind, kept = tier(group, near_identical), keeper(group)
            for hit in group:
                if hit is kept:
                    continue
                new = target / Path(hit.filepath).relative_to(common)
                if new.exists():
                    say(f"not moved {hit.filepath}: {new} exists")
                    continue
                move_file(Path(hit.filepath), new)
                writer.writerow([hit.filepath, str(new), number, kind, f"{hit.score:.4f}"])
                out.flush()  # the list holds every move made, even if the next one fails
                rename_row(client, collection_name, hit.filepath, str(new))
                say(f"moved {hit.filepath} -> {new}")
                moved += 1
    return moved, listing


def undo_moves(client, collection_name: str, listing: str | os.PathLike, say=print) -> int:
    """Put back every file a ``move_extras`` list names, last first, and their rows; a file whose old
    path is taken again, or that is no longer where it was moved, is left and said so."""
    try:
        with open(listing, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise TextimgError(f"cannot read {listing}: {exc.strerror or exc}") from None
    if rows and not {"old_path", "new_path"} <= set(rows[0]):
        raise TextimgError(f"{listing} is not a list written by --move-extras-to (no old_path, new_path columns)")
    restored = 0
    for row in reversed(rows):
        old, new = Path(row["old_path"]), Path(row["new_path"])
        if not new.exists():
            say(f"not restored {old}: {new} is not there (restored already?)")
            continue
        if old.exists():
            say(f"not restored {old}: a file is there again")
            continue
        move_file(new, old)
        rename_row(client, collection_name, str(new), str(old))
        say(f"restored {old}")
        restored += 1
    return restored


def move_file(source: Path, target: Path) -> None:
    """Move a file, folders made as needed; across file systems a copy, checked, then the original removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError:
        shutil.copy2(source, target)
        if os.path.getsize(target) != os.path.getsize(source):
            target.unlink()
            raise TextimgError(f"copying {source} to {target} did not complete: nothing was moved") from None
        source.unlink()


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
