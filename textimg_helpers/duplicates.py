"""Near-duplicate images: groups of stored vectors within a cosine threshold (no model is loaded).

Two images are linked when the cosine of their stored vectors is at least ``threshold``; a group is
every image reachable through such links (single linkage, union-find). The vectors are read from
the collection and compared with numpy, exactly: each row only with the rows that pivots (rows
picked at random, each with the rows near it) leave as possible matches, or every pair when the
vectors are too spread for pivots to rule pairs out (``benchmarks/README.md`` measures both, and
Milvus range search). Each group has a tier: identical
files (the same bytes), near-identical (every image at a cosine of at least ``NEAR_IDENTICAL`` to the
first), or similar. ``keeper`` names the image a group keeps; ``moves`` resolves the groups.
"""

from __future__ import annotations

import contextvars
import filecmp
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from pymilvus import MilvusException

from .hits import Hit
from .store import check_filter, each_page, filter_refused, has_metadata

__all__ = ["DEFAULT_THRESHOLD", "NEAR_IDENTICAL", "all_pairs", "find_duplicates", "group_rows", "keeper",
           "linked_pairs", "pivot_pairs", "pivot_plan", "read_vectors", "tier"]

DEFAULT_THRESHOLD = 0.95
NEAR_IDENTICAL = 0.98  # a group whose images all are at least this close to its first is near-identical
KEEP_FIELDS = ("digest", "width", "height", "taken")  # what tiers and the choice of the image to keep read
FILE_FIELDS = ("size", "mtime")  # what a move checks a file against (every collection stores them)
BLOCK_SIZE = 512  # rows compared at once: a (BLOCK_SIZE, n) float32 matrix, 200 MB at n = 100,000
PIVOTS_FROM = 2_000  # rows from which linked_pairs tries pivots (below, every pair is compared at once)
PIVOT_ROWS = 100  # one pivot per this many rows
PIVOT_WORTH = 0.5  # pivots are used when they leave at most this share of the pairs to compare
PIVOT_RADIUS = np.radians(50)  # the widest angle from a row to its pivot
ANGLE_SLACK = 1e-3  # radians added to each pivot's bound, for float32 rounding of the cosines
READ_BATCH = 256  # rows per page of query_iterator (see benchmarks/README.md for the page sizes tried)
READ_PARTS = 2  # threads that read the vectors, each a range of ids (benchmarks/README.md: 1.5x faster than 1)


def read_vectors(client, collection_name: str, filter: str = "", batch_size: int = READ_BATCH,
                 parts: int = READ_PARTS) -> tuple[list[dict], np.ndarray]:
    """Every row's ``id``, ``filepath`` and ``label``, and its stored vector: (rows, image_embs (n, dim)).
    The ids are split into ``parts`` ranges, each read by its own thread (one waits on Milvus while
    another turns its page into numbers)."""
    check_filter(filter)
    fields = ["filepath", "label", "vector", *FILE_FIELDS,
              *(KEEP_FIELDS if has_metadata(client, collection_name) else ())]
    step = 2 ** 63 // parts  # ids are 63-bit (store.path_id)
    ranges = [f"id >= {k * step}" + (f" and id < {(k + 1) * step}" if k < parts - 1 else "") for k in range(parts)]
    wheres = [f"({filter}) and {r}" if filter else r for r in ranges]
    try:
        with ThreadPoolExecutor(parts) as pool:
            found = list(pool.map(lambda where: contextvars.copy_context().run(
                read_pages, client, collection_name, where, fields, batch_size), wheres))
    except MilvusException as exc:
        raise filter_refused("to read the rows", filter, exc) from None
    rows = [row for part_rows, _ in found for row in part_rows]
    pages_of_embs = [embs for _, part_embs in found for embs in part_embs]
    image_embs = np.concatenate(pages_of_embs) if pages_of_embs else np.zeros((0, 0), np.float32)
    return rows, image_embs


def read_pages(client, collection_name: str, filter: str, fields: list[str],
               batch_size: int) -> tuple[list[dict], list[np.ndarray]]:
    """The rows that ``filter`` keeps, page by page: (rows without their vectors, one array per page)."""
    rows, pages_of_embs = [], []

    def take(page: list[dict]) -> None:
        pages_of_embs.append(np.array([row.pop("vector") for row in page], dtype=np.float32))
        rows.extend(page)

    each_page(client, collection_name, take, filter, fields, batch_size)
    return rows, pages_of_embs


def linked_pairs(image_embs: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                 block_size: int = BLOCK_SIZE, pivots: bool = True):
    """Yield ``(i, j)`` index arrays (i < j) of the pairs whose cosine is at least ``threshold``: through
    pivots (``pivot_pairs``) when they leave out most pairs, else every pair (``all_pairs``; always
    with ``pivots=False``). Both are exact: they yield the same pairs."""
    image_embs = np.ascontiguousarray(image_embs, dtype=np.float32)
    plan = pivot_plan(image_embs, threshold) if pivots and len(image_embs) >= PIVOTS_FROM else None
    if plan is None:
        yield from all_pairs(image_embs, threshold, block_size)
    else:
        yield from pivot_pairs(image_embs, threshold, plan)


def all_pairs(image_embs: np.ndarray, threshold: float, block_size: int = BLOCK_SIZE):
    """Every pair's cosine, block by block: ``(i, j)`` index arrays (i < j) of those at least ``threshold``."""
    for start in range(0, len(image_embs), block_size):
        block = image_embs[start:start + block_size]
        sims = block @ image_embs[start:].T  # this block against itself and every later row
        i, j = np.nonzero(sims >= threshold)
        later = j > i  # each pair once, no row with itself
        yield i[later] + start, j[later] + start


# Pivots: the same pairs as all_pairs, with most pairs never compared ----------------------------------
#
# Every row joins a pivot (a row picked at random) at most ``PIVOT_RADIUS`` away from it; rows farther
# from every pivot get pivots of their own, picked among them, until none is left. A pivot's radius is
# the widest angle from it to one of its rows. Two rows at a cosine of at least ``threshold`` are at most
# ``theta = arccos(threshold)`` apart, so by the triangle inequality on the sphere a row ``a`` can be that
# close to a row of pivot ``p`` only if ``angle(a, p) <= radius(p) + theta``: each pivot's rows are
# compared only with the rows that pass that test. The test leaves out no pair, so the result is exact.
# On clustered vectors (photos of kinds of things) it leaves out most pairs; on vectors spread evenly it
# leaves out few, and then the plain pass runs instead.

def pivot_plan(image_embs: np.ndarray, threshold: float, seed: int = 0):
    """``(rows of each pivot, rows that pass each pivot's test)``, or ``None`` when the vectors are not of
    unit length or the pivots would leave more than ``PIVOT_WORTH`` of the pairs to compare."""
    norms = np.linalg.norm(image_embs, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        return None  # the angle bounds hold for cosines; the pairs are tested by dot product
    found = join_pivots(image_embs, np.random.default_rng(seed))
    if found is None:
        return None
    pivots, nearest, angle = found
    radius = np.zeros(len(pivots))
    np.maximum.at(radius, nearest, angle)
    reach = np.cos(np.minimum(np.pi, radius + np.arccos(np.clip(threshold, -1.0, 1.0)) + ANGLE_SLACK))
    members = np.split(np.argsort(nearest, kind="stable"), np.cumsum(np.bincount(nearest, minlength=len(pivots)))[:-1])
    budget = PIVOT_WORTH * len(image_embs) ** 2 / 2
    passing = rows_passing(image_embs, image_embs[pivots], reach, np.array([len(m) for m in members]), budget)
    return None if passing is None else (members, passing)


def join_pivots(image_embs: np.ndarray, rng, most: float = 0.05):
    """``(pivot rows, each row's pivot (index into them), its angle to it)``, every angle at most
    ``PIVOT_RADIUS``. Rounds of new pivots, picked among the rows still left, until none is left; rows
    left when ``most`` of the rows would do become pivots themselves. ``None`` when a round leaves 80% or
    more of the rows it started with: the rows are too spread for pivots to help."""
    n = len(image_embs)
    pivots, nearest, angle = np.zeros(0, np.int64), np.zeros(n, np.int64), np.full(n, np.pi)
    left = np.arange(n)
    while len(left):
        last = len(left) <= most * n - len(pivots)
        count = min(len(left), max(-(-len(left) // PIVOT_ROWS), 64))
        new = left if last else rng.choice(left, count, replace=False)
        near, ang = nearest_pivot(image_embs[left], image_embs[new])
        closer = ang < angle[left]
        nearest[left[closer]], angle[left[closer]] = near[closer] + len(pivots), ang[closer]
        pivots, before, left = np.concatenate([pivots, new]), len(left), left[angle[left] > PIVOT_RADIUS]
        if len(left) >= 0.8 * before and not last:
            return None
    return pivots, nearest, angle


def nearest_pivot(image_embs: np.ndarray, pivots: np.ndarray, chunk: int = 8192):
    """Each row's nearest pivot and its angle to it (radians), computed ``chunk`` rows at a time."""
    nearest, angle = np.empty(len(image_embs), np.int64), np.empty(len(image_embs))
    for start in range(0, len(image_embs), chunk):
        sims = image_embs[start:start + chunk] @ pivots.T
        nearest[start:start + chunk] = sims.argmax(axis=1)
        best = np.take_along_axis(sims, nearest[start:start + chunk, None], axis=1)[:, 0]
        angle[start:start + chunk] = np.arccos(np.clip(best, -1.0, 1.0))
    return nearest, angle


def rows_passing(image_embs: np.ndarray, pivots: np.ndarray, reach: np.ndarray, sizes: np.ndarray,
                 budget: float, chunk: int = 8192):
    """For each pivot, the rows (ascending) whose cosine to it is at least its ``reach``; ``None`` as soon
    as the pairs to compare (rows passing a pivot times its ``sizes``) pass ``budget``."""
    found_rows, found_pivots, work = [], [], 0
    for start in range(0, len(image_embs), chunk):
        rows, pivot = np.nonzero(image_embs[start:start + chunk] @ pivots.T >= reach[None, :])
        work += int(sizes[pivot].sum())
        if work > budget:
            return None
        found_rows.append(rows + start)
        found_pivots.append(pivot)
    rows, pivot = np.concatenate(found_rows), np.concatenate(found_pivots)
    order = np.argsort(pivot, kind="stable")  # rows stay ascending within each pivot
    return np.split(rows[order], np.cumsum(np.bincount(pivot, minlength=len(pivots)))[:-1])


def pivot_pairs(image_embs: np.ndarray, threshold: float, plan):
    """Yield ``(i, j)`` index arrays (i < j) of the pairs at a cosine of at least ``threshold``, each
    pivot's rows against the rows that pass its test: each pair once, from the pivot of its later row."""
    for members, passing in zip(*plan):
        if len(members) == 0:
            continue
        sims = image_embs[passing] @ image_embs[members].T
        i, j = np.nonzero(sims >= threshold)
        a, b = passing[i], members[j]
        keep = a < b
        yield a[keep], b[keep]


def group_rows(image_embs: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
               block_size: int = BLOCK_SIZE, pivots: bool = True) -> list[list[int]]:
    """Row indices of each group of near-duplicates (2 or more rows), biggest groups first
    (``pivots``: as ``linked_pairs``)."""
    parent = np.arange(len(image_embs))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i_s, j_s in linked_pairs(image_embs, threshold, block_size, pivots):
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
                {key: rows[i][key] for key in (*FILE_FIELDS, *KEEP_FIELDS) if key in rows[i]})
            for k, i in enumerate(group)]
    return [hits[first]] + sorted(hits[:first] + hits[first + 1:], key=lambda h: (-h.score, h.filepath))


def find_duplicates(client, collection_name: str, threshold: float = DEFAULT_THRESHOLD, filter: str = "",
                    pivots: bool = True, parts: int = READ_PARTS) -> tuple[list[list[Hit]], int]:
    """Groups of near-duplicate images in a collection, biggest first, and the number of rows read
    (``pivots``: as ``linked_pairs``; ``parts``: as ``read_vectors``)."""
    rows, image_embs = read_vectors(client, collection_name, filter, parts=parts)
    order = sorted(range(len(rows)), key=lambda i: rows[i]["filepath"])  # same groups whatever Milvus' order
    rows, image_embs = [rows[i] for i in order], image_embs[order] if order else image_embs
    return [rank_group(rows, image_embs, g) for g in group_rows(image_embs, threshold, pivots=pivots)], len(rows)


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
