"""Search latency: warm text queries over 1,000 images, and vector search over 100,000 vectors.

    python benchmarks/bench_search.py --random-weights [--images DIR] [--skip text|vectors]

Part 1: 400 real images + 600 flipped / cropped copies (written to /tmp) indexed with
``index_folder``; then ``search_by_text`` (encode the text + top 10 + hits) with a warm encoder
and client: p50 / p95 over --queries queries. ViT-B/32 with RANDOM weights (real cost, no meaning).
Part 2: 100,000 synthetic 512-d unit vectors (a mixture of 1,000 clusters, like embeddings of
photos of 1,000 kinds of things) in Milvus Lite, inserted in chunks; IVF_FLAT for several
nlist / nprobe, and FLAT: p50 / p95 of one-vector searches (top 10, with the project's output
fields) and recall@10 against exact numpy search, whose time is shown for reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import (DEFAULT_IMAGES, LABEL, image_paths, link_images, load_random_encoder, machine,
                    percentiles, temp_dir, timed)

DIM = 512
OUTPUT_FIELDS = ["filepath", "label"]


def make_variants(paths, folder, n: int) -> None:
    """``n`` extra JPEGs: mirrored or centre-cropped copies of the real images."""
    from PIL import ImageOps
    from textimg_helpers.data import load_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = paths[i % len(paths)]
        img = load_image(path)
        if (i // len(paths)) % 2 == 0:
            img, kind = ImageOps.mirror(img), "flip"
        else:
            w, h = img.size
            img, kind = img.crop((w // 8, h // 8, w - w // 8, h - h // 8)), "crop"
        img.save(folder / f"{path.stem}_{kind}{i}.jpg", quality=90)


def bench_text(args) -> None:
    """Warm ``search_by_text`` latency over 1,000 indexed images."""
    from textimg_helpers.data import label_for
    from textimg_helpers.encoders import encode_queries
    from textimg_helpers.ingest import index_folder
    from textimg_helpers.search import search_by_text
    from textimg_helpers.milvus import connect
    from textimg_helpers.store import search_by_vector

    paths = image_paths(args.images)
    encoder = load_random_encoder()
    with temp_dir() as tmp:
        folder = link_images(paths, tmp / "images")
        make_variants(paths, folder / "variants", args.total - len(paths))
        client = connect(str(tmp / "search.db"))
        report, seconds = timed(index_folder, client, "bench", folder, encoder, progress=False, verbose=False)
        print(f"indexed {report.total} images in {seconds:.0f}s ({report.indexed / seconds:.1f} images/s)")
        queries = [f"a photo of a {label_for(p).replace('_', ' ')}" for p in paths][:args.queries]
        for query in queries[:5]:  # warm-up
            search_by_text(client, "bench", encoder, query)
        total, encode, search = [], [], []
        for query in queries:
            hits, s = timed(search_by_text, client, "bench", encoder, query, top_k=10)
            assert len(hits) == 10
            total.append(s)
        for query in queries:
            embs, s = timed(encode_queries, encoder, [query])
            encode.append(s)
            search.append(timed(search_by_vector, client, "bench", embs, 10)[1])
        transports = compare_transports(client, tmp / "search.db", encoder, queries)
    for name, times in (("search_by_text (total)", total), ("  encode text", encode),
                        ("  Milvus search top 10", search)):
        p50, p95 = percentiles(times)
        print(f"{name:<24} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")
    print(f"target: p50 <= 60 ms -> {'met' if percentiles(total)[0] <= 60 else 'MISSED'} "
          f"({len(queries)} queries, {LABEL}, {report.total} images)")
    print("transport, the same queries alternated between two copies of the collection:")
    for name, (shared, own) in transports.items():
        ratio = percentiles(shared)[0] / percentiles(own)[0]
        print(f"  {name:<22} shared service (its private Unix socket) p50 {percentiles(shared)[0]:6.2f} ms | "
              f"Milvus Lite in this process p50 {percentiles(own)[0]:6.2f} ms | ratio {ratio:.2f}")


def compare_transports(client, db, encoder, queries) -> dict[str, tuple[list, list]]:
    """Warm latency through the shared service (its private Unix socket) against Milvus Lite opened in
    this process (as the tutorial opens it), on a copy of the same file, query by query."""
    import shutil

    from textimg_helpers.encoders import encode_queries
    from textimg_helpers.milvus import _connect_in_process
    from textimg_helpers.search import search_by_text
    from textimg_helpers.service.client import stop_service
    from textimg_helpers.store import search_by_vector

    stop_service(db)  # the file is closed, whole: copy it
    shutil.copy(db, db.with_name("copy.db"))
    own = _connect_in_process(str(db.with_name("copy.db")))
    clients = {"service": client, "in process": own}
    times = {"search_by_text": ([], []), "Milvus search top 10": ([], [])}
    for round_ in range(2):
        for query in queries:
            embs = encode_queries(encoder, [query])
            for name in ("service", "in process") if round_ == 0 else ("in process", "service"):  # alternate who goes first
                i = 0 if name == "service" else 1
                times["search_by_text"][i].append(timed(search_by_text, clients[name], "bench", encoder, query)[1])
                times["Milvus search top 10"][i].append(timed(search_by_vector, clients[name], "bench", embs, 10)[1])
    client.close()
    stop_service(db)
    return times


def synthetic(n: int, n_queries: int, clusters: int = 1000, spread: float = 0.65, seed: int = 0):
    """Unit vectors around ``clusters`` random centres (within-cluster cosine about 0.7), and queries
    drawn the same way (not in the data); ``clusters=0``: uniform random directions."""
    rng = np.random.default_rng(seed)
    if not clusters:  # uniform random directions
        x = rng.standard_normal((n + n_queries, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x[:n], x[n:]
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m):
        x = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, DIM)).astype(np.float32) * (
            spread / np.sqrt(DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(n_queries)


def exact_top10(data: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Exact top-10 ids by cosine (numpy), and the time of each one-query search."""
    ids, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        scores = data @ q
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - t0)
        ids.append(top)
    return np.array(ids), times


def insert_vectors(client, collection: str, data: np.ndarray, chunk: int = 1000) -> float:
    """The project's schema (``create_collection``), rows written in chunks; returns seconds."""
    from textimg_helpers.store import create_collection

    create_collection(client, collection, DIM, "synthetic")
    t0 = time.perf_counter()
    for start in range(0, len(data), chunk):
        rows = [{"id": i, "filepath": f"/synthetic/{i}.jpg", "label": f"c{i % 1000}", "size": 0, "mtime": 0,
                 "vector": data[i].tolist()} for i in range(start, min(start + chunk, len(data)))]
        client.insert(collection, rows)
    client.flush(collection)
    return time.perf_counter() - t0


def reindex(client, collection: str, index_type: str, params: dict) -> float:
    """Replace the vector index and load the collection again; returns seconds."""
    t0 = time.perf_counter()
    client.release_collection(collection)
    client.drop_index(collection, "vector")
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=params)
    client.create_index(collection, index_params)
    client.load_collection(collection)
    return time.perf_counter() - t0


def run_queries(client, collection: str, queries: np.ndarray, params: dict):
    """One-vector searches like the project's (top 10, output fields, Strong): times and ids."""
    times, ids = [], []
    for q in queries:
        t0 = time.perf_counter()
        res = client.search(collection, data=[q.tolist()], limit=10, output_fields=OUTPUT_FIELDS,
                            search_params={"metric_type": "COSINE", "params": params},
                            consistency_level="Strong")
        times.append(time.perf_counter() - t0)
        ids.append([h["id"] for h in res[0]])
    return times, ids


def recall_at_10(ids, truth: np.ndarray) -> float:
    return float(np.mean([len(set(found) & set(true.tolist())) / 10 for found, true in zip(ids, truth)]))


def bench_vectors(args) -> None:
    """Search-only latency and recall@10 over ``args.vectors`` synthetic vectors, two data sets."""
    print(f"\n{args.vectors:,} synthetic {DIM}-d unit vectors, {args.vector_queries} one-vector queries each")
    print("clustered: 1,000 clusters, within-cluster cosine ~0.7 (like photos of 1,000 kinds of things);"
          " uniform: random directions (worst case for any IVF index)")
    for kind in args.data:
        data, queries = synthetic(args.vectors, args.vector_queries, clusters=1000 if kind == "clustered" else 0)
        bench_one(args, kind, data, queries)
    print("target: p50 <= 20 ms with recall@10 >= 0.95")


def bench_one(args, kind: str, data: np.ndarray, queries: np.ndarray) -> None:
    """Insert ``data`` once, then time every index configuration against exact numpy search."""
    from textimg_helpers.milvus import connect
    from textimg_helpers.store import INDEX_PARAMS, SEARCH_PARAMS

    truth, numpy_times = exact_top10(data, queries)
    p50, p95 = percentiles(numpy_times)
    default = (INDEX_PARAMS["params"]["nlist"], SEARCH_PARAMS["params"]["nprobe"])
    with temp_dir() as tmp:
        client = connect(str(tmp / "vectors.db"))
        insert_s = insert_vectors(client, "vectors", data)
        print(f"\n[{kind}] insert in chunks of 1,000 rows: {insert_s:.0f}s; numpy exact search "
              f"(reference): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        print(f"{'index':<9} {'nlist':>5} {'nprobe':>6} {'build s':>7} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'recall@10':>9}")
        configs = [("IVF_FLAT", nlist) for nlist in args.nlist] + [("FLAT", None)]
        for index_type, nlist in configs:
            build = reindex(client, "vectors", index_type, {"nlist": nlist} if nlist else {})
            run_queries(client, "vectors", queries[:5], {})  # warm-up
            for nprobe in (args.nprobe if nlist else [None]):
                if nprobe and nprobe > nlist:
                    continue
                times, ids = run_queries(client, "vectors", queries, {"nprobe": nprobe} if nprobe else {})
                p50, p95 = percentiles(times)
                mark = "  <- project default" if (nlist, nprobe) == default else ""
                print(f"{index_type:<9} {nlist or '-':>5} {nprobe or '-':>6} {build:7.1f} {p50:7.1f} "
                      f"{p95:7.1f} {recall_at_10(ids, truth):9.3f}{mark}")
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images (default: %(default)s)")
    parser.add_argument("--random-weights", action="store_true", required=True,
                        help="required: no real weights here; every figure is for random weights")
    parser.add_argument("--total", type=int, default=1000, help="images to index for part 1")
    parser.add_argument("--queries", type=int, default=100, help="text queries for part 1")
    parser.add_argument("--vectors", type=int, default=100_000, help="synthetic vectors for part 2")
    parser.add_argument("--vector-queries", type=int, default=200)
    parser.add_argument("--nlist", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--data", nargs="+", choices=["clustered", "uniform"], default=["clustered", "uniform"])
    parser.add_argument("--skip", choices=["text", "vectors"], help="run only the other part")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.skip != "text":
        bench_text(args)
    if args.skip != "vectors":
        bench_vectors(args)


if __name__ == "__main__":
    main()
