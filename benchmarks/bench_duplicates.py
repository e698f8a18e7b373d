"""Near-duplicate search: rows/s of ``textimg duplicates`` at 10,000 and 100,000 synthetic vectors.

    python benchmarks/bench_duplicates.py [--sizes 10000 100000] [--range-seconds 120]

No model and no images: 512-d unit vectors around 1,000 random centres (within-cluster cosine about
0.7, like photos of 1,000 kinds of things, as in bench_search.py), 1% of them replaced by planted
near-copies of another row (cosine about 0.99, like a re-saved JPEG). They are written to a
temporary Milvus Lite file with the project's schema (through the file's shared service, as every
``textimg`` command and notebook reaches it), then for each size:

(a) read_vectors: the stored vectors read back with query_iterator, pages of 256 and 1,000 rows,
    by one thread and by READ_PARTS threads (each a range of ids), with the ratio;
(b) group_rows: the pairs through pivots (the default) against the cosine of every pair, blockwise
    (what ``textimg duplicates`` did before pivots; ``--block-sizes``), + union-find, with the ratio;
(c) find_duplicates: (a) + (b) as the CLI runs them, the headline rows/s, with pivots and with every
    pair compared, and as before both (every pair, one reading thread), with the ratios; the planted
    pairs found are checked against the truth (every planted pair, nothing else) and the groups of
    each way against each other;
(d) the CLI, ``python -m textimg_helpers duplicates`` in a fresh process (imports, connecting to the
    running service, reading, grouping, printing);
(e) the alternative: Milvus range search (radius = threshold, range_filter = 1) with every row as a
    query, batches of 100; stopped after --range-seconds and extrapolated when it would take longer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
from common import REPO, machine, temp_dir, timed

DIM = 512
THRESHOLD = 0.95


def planted_vectors(n: int, clusters: int = 1000, spread: float = 0.65, copies: float = 0.01, seed: int = 0):
    """``n`` clustered unit vectors, of which ``copies * n`` are near-copies (cosine ~0.99) of others;
    returns the vectors and the set of planted pairs ``(original, copy)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * (
        spread / np.sqrt(DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chosen = rng.choice(n, size=2 * int(n * copies), replace=False)
    originals, copy_rows = chosen[::2], chosen[1::2]
    x[copy_rows] = x[originals] + rng.standard_normal((len(originals), DIM)).astype(np.float32) * (0.1 / np.sqrt(DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, {tuple(sorted(p)) for p in zip(originals.tolist(), copy_rows.tolist())}


def insert_vectors(client, collection: str, data: np.ndarray, chunk: int = 1000) -> float:
    """The project's schema, rows ``/synthetic/<i>.jpg`` (ids from their paths, as ``textimg index``
    gives them) written in chunks; returns seconds."""
    from textimg_helpers.store import create_collection, path_id

    create_collection(client, collection, DIM, "synthetic")
    t0 = time.perf_counter()
    for start in range(0, len(data), chunk):
        client.insert(collection, [{"id": path_id(synthetic_path(i)), "filepath": synthetic_path(i), "label": "s",
                                    "size": 0, "mtime": 0, "vector": data[i].tolist()}
                                   for i in range(start, min(start + chunk, len(data)))])
    client.flush(collection)
    return time.perf_counter() - t0


def synthetic_path(i: int) -> str:
    return f"/synthetic/{i:06d}.jpg"


def found_pairs(groups) -> set[tuple[int, int]]:
    """Pairs of row numbers (from ``/synthetic/<i>.jpg``) inside each group."""
    pairs = set()
    for group in groups:
        rows = sorted(int(hit.filepath[11:17]) for hit in group)
        pairs |= {(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]}
    return pairs


def range_search(client, collection: str, data: np.ndarray, budget_s: float, batch: int = 100):
    """Milvus range search with every row as a query; returns (seconds, queries done, pairs found)."""
    params = {"metric_type": "COSINE", "params": {"radius": THRESHOLD, "range_filter": 1.0}}
    pairs, t0, done = set(), time.perf_counter(), 0
    for start in range(0, len(data), batch):
        res = client.search(collection, data=data[start:start + batch].tolist(), limit=16, output_fields=["filepath"],
                            search_params=params, consistency_level="Strong")
        for offset, hits in enumerate(res):
            rows = {int(h["entity"]["filepath"][11:17]) for h in hits}
            pairs |= {tuple(sorted((start + offset, row))) for row in rows if row != start + offset}
        done = min(start + batch, len(data))
        if time.perf_counter() - t0 > budget_s:
            break
    return time.perf_counter() - t0, done, pairs


def cli_seconds(uri: str, collection: str) -> tuple[float, str]:
    """Wall time of ``python -m textimg_helpers duplicates`` in a fresh process, and its last line."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TEXTIMG_PROFILE": "shapes"}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "textimg_helpers", "duplicates", "--uri", uri,
                          "--collection", collection, "-q"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr
    return seconds, run.stdout.strip().splitlines()[-1]


def bench_size(n: int, args) -> None:
    from textimg_helpers.duplicates import READ_PARTS, find_duplicates, group_rows, read_vectors
    from textimg_helpers.service.client import stop_services_under
    from textimg_helpers.milvus import connect

    data, truth = planted_vectors(n)
    print(f"\n== {n:,} vectors ({len(truth):,} planted near-copy pairs), threshold {THRESHOLD}", flush=True)
    with temp_dir() as tmp:
        uri = str(tmp / "dup.db")
        client = connect(uri)  # the file's shared Milvus Lite service, which the CLI below uses too
        print(f"insert in chunks of 1,000 rows: {insert_vectors(client, 'vectors', data):.1f} s (not counted below)",
              flush=True)
        s, last = cli_seconds(uri, "vectors")
        print(f"(d) CLI `textimg duplicates`, fresh process: {s:6.1f} s  {n / s:9,.0f} rows/s  ({last})", flush=True)
        client.load_collection("vectors")
        for batch_size in args.read_batches:
            seconds = {}
            for parts in sorted({1, READ_PARTS}):
                (rows, embs), seconds[parts] = timed(read_vectors, client, "vectors", "", batch_size, parts)
                assert embs.shape == (n, DIM)
                print(f"(a) read_vectors (query_iterator, pages of {batch_size:>4}, {parts} thread(s)): "
                      f"{seconds[parts]:6.1f} s  {n / seconds[parts]:9,.0f} rows/s")
            print(f"    1 thread / {READ_PARTS} (the default): **{seconds[1] / seconds[READ_PARTS]:.2f}x**")
        pivoted, s_pivots = timed(group_rows, embs, THRESHOLD)
        print(f"(b) group_rows, pivots (the default): {s_pivots:6.1f} s  {n / s_pivots:9,.0f} rows/s  "
              f"({len(pivoted):,} groups)")
        for block_size in args.block_sizes:
            groups, s = timed(group_rows, embs, THRESHOLD, block_size, False)
            print(f"(b) group_rows, every pair, block {block_size:>5}: {s:6.1f} s  {n / s:9,.0f} rows/s  "
                  f"({len(groups):,} groups, {'the same' if groups == pivoted else 'NOT THE SAME'}; "
                  f"largest block product {block_size * n * 4 / 1e6:,.0f} MB); every pair / pivots: "
                  f"**{s / s_pivots:.1f}x**")
        (groups, n_rows), s = timed(find_duplicates, client, "vectors", THRESHOLD)
        pairs = found_pairs(groups)
        print(f"(c) find_duplicates (a + b, project defaults): {s:6.1f} s  **{n / s:,.0f} rows/s**; "
              f"planted pairs found {len(pairs & truth):,}/{len(truth):,}, other pairs {len(pairs - truth):,}")
        (every, _), s_every = timed(find_duplicates, client, "vectors", THRESHOLD, "", False)
        print(f"(c) find_duplicates, every pair compared: {s_every:6.1f} s  {n / s_every:,.0f} rows/s "
              f"({'the same groups' if every == groups else 'NOT THE SAME GROUPS'}); every pair / pivots: "
              f"**{s_every / s:.1f}x**")
        (before, _), s_before = timed(find_duplicates, client, "vectors", THRESHOLD, "", False, 1)
        print(f"(c) find_duplicates as before pivots and reading threads (every pair, 1 thread): {s_before:6.1f} s  "
              f"{n / s_before:,.0f} rows/s ({'the same groups' if before == groups else 'NOT THE SAME GROUPS'}); "
              f"before / now: **{s_before / s:.1f}x**")
        s, done, found = range_search(client, "vectors", data, args.range_seconds)
        client.close()
        stop_services_under(tmp)
    whole = s * n / done
    note = "" if done == n else f" (stopped after {done:,} of {n:,} queries; whole run extrapolated: {whole:,.0f} s)"
    print(f"(e) Milvus range search, every row a query: {s:6.1f} s for {done:,} queries  {done / s:9,.0f} rows/s"
          f"{note}; pairs found {len(found & truth):,}, other pairs {len(found - truth):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[512],
                        help="blocks of the every-pair pass (512: its default)")
    parser.add_argument("--read-batches", type=int, nargs="+", default=[256, 1000])
    parser.add_argument("--range-seconds", type=float, default=120, help="time budget of (e) per size")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for n in args.sizes:
        bench_size(n, args)


if __name__ == "__main__":
    main()
