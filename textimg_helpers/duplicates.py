"""Near-duplicate images: groups of stored vectors within a cosine threshold (no model is loaded).

Two images are linked when the cosine of their stored vectors is at least ``threshold``; a group is
every image reachable through such links (single linkage, union-find). The vectors are read from
the collection and compared block by block with numpy: an exact all-pairs comparison
(``benchmarks/README.md`` compares it with Milvus range search).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pymilvus import MilvusException

from .config import TextimgError
from .hits import Hit
from .milvus import pymilvus_errors_unlogged
from .store import check_filter, filter_refused

DEFAULT_THRESHOLD = 0.95
BLOCK_SIZE = 512  # rows compared at once: a (BLOCK_SIZE, n) float32 matrix, 200 MB at n = 100,000
READ_BATCH = 256  # rows per page of query_iterator (see benchmarks/README.md for the page sizes tried)


def read_vectors(client, collection_name: str, filter: str = "",
                 batch_size: int = READ_BATCH) -> tuple[list[dict], np.ndarray]:
    """Every row's ``id``, ``filepath`` and ``label``, and its stored vector: (rows, image_embs (n, dim))."""
    rows, pages_of_embs = [], []
    check_filter(filter)
    try:
        with pymilvus_errors_unlogged():  # its iterator logs a warning about timestamps on Milvus Lite
            pages = client.query_iterator(collection_name, batch_size=batch_size, filter=filter,
                                          output_fields=["filepath", "label", "vector"])
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
    hits = [Hit(rows[i]["filepath"], rows[i]["label"], float(sims[first, k]), int(rows[i]["id"]))
            for k, i in enumerate(group)]
    return [hits[first]] + sorted(hits[:first] + hits[first + 1:], key=lambda h: (-h.score, h.filepath))


def find_duplicates(client, collection_name: str, threshold: float = DEFAULT_THRESHOLD,
                    filter: str = "") -> tuple[list[list[Hit]], int]:
    """Groups of near-duplicate images in a collection, biggest first, and the number of rows read."""
    rows, image_embs = read_vectors(client, collection_name, filter)
    order = sorted(range(len(rows)), key=lambda i: rows[i]["filepath"])  # same groups whatever Milvus' order
    rows, image_embs = [rows[i] for i in order], image_embs[order] if order else image_embs
    return [rank_group(rows, image_embs, g) for g in group_rows(image_embs, threshold)], len(rows)
