"""Ingestion: read -> encode -> write, in batches, incremental, skipping bad files one by one."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import TextimgError
from .data import IMAGE_EXTENSIONS, check_image, folder_root, label_for, list_image_paths, load_image
from .store import (check_collection, count_rows, create_collection, fetch_file_stats, folder_filter, path_id,
                    rows_under, upsert_rows)


@dataclass
class FileInfo:
    """An image file to index: path, size and modification time (ns), primary key, label."""

    filepath: str
    size: int
    mtime: int
    id: int
    label: str


@dataclass
class IngestPlan:
    """What an ingestion run has to do, worked out without loading any model."""

    folder: Path
    todo: list[FileInfo]
    unchanged: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)  # rows of files no longer in the folder
    changed: set[int] = field(default_factory=set)  # ids in ``todo`` that have an older row


@dataclass
class IngestReport:
    """What a run did: counts, every skipped file with its reason, and time per stage."""

    indexed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    removed: int = 0  # rows of files deleted, moved, renamed or broken since they were indexed
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: {"read": 0.0, "encode": 0.0, "write": 0.0})

    def summary(self) -> str:
        """The one-line contract: ``indexed=<new> skipped=<bad> unchanged=<there> total=<rows>``."""
        return (f"indexed={self.indexed} skipped={len(self.skipped)} "
                f"unchanged={self.unchanged} total={self.total}")

    def __str__(self) -> str:
        lines = [f"skipped {path}: {reason}" for path, reason in self.skipped]
        if self.removed:
            lines.append(f"removed {self.removed} rows of files no longer in the folder or no longer readable")
        if self.indexed:
            rate = self.indexed / self.seconds if self.seconds else 0.0
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
            lines.append(f"{self.seconds:.1f}s, {rate:.1f} images/s ({stages})")
        return "\n".join(lines + [self.summary()])


def plan_ingestion(client, collection_name: str, folder: str | os.PathLike,
                   model: str | None = None, remove_missing: bool = True) -> IngestPlan:
    """List the images under ``folder`` and keep those not indexed with the same size and mtime; with
    ``remove_missing``, also find the rows of files under ``folder`` that are not there any more."""
    root = folder_root(folder)
    files, skipped = [], []
    for path in list_image_paths(root):
        try:
            str(path).encode("utf-8")
            st = path.stat()
        except UnicodeEncodeError:  # printed with \xNN escapes: printing it raw would crash
            skipped.append((os.fsencode(path).decode("utf-8", "backslashreplace"),
                            "file name is not valid UTF-8, which Milvus cannot store: rename the file"))
            continue
        except OSError as exc:
            broken = " (broken symbolic link)" if path.is_symlink() else ""
            skipped.append((str(path), f"cannot read file: {exc.strerror or exc}{broken}"))
            continue
        files.append(FileInfo(str(path), st.st_size, st.st_mtime_ns, path_id(str(path)), label_for(path, root)))
    if not files and not skipped:
        raise TextimgError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                           "in any letter case, in sub-folders too)")
    known, gone = {}, []
    if client.has_collection(collection_name):
        if model is not None:
            check_collection(client, collection_name, model)
        client.load_collection(collection_name)
        known = fetch_file_stats(client, collection_name, [f.id for f in files])
        if remove_missing:
            gone = find_gone(client, collection_name, root, {f.id for f in files}, len(known))
    todo = [f for f in files if known.get(f.id) != (f.size, f.mtime)]
    return IngestPlan(root, todo, len(files) - len(todo), skipped, gone, {f.id for f in todo} & set(known))


def find_gone(client, collection_name: str, root: Path, present: set[int], known: int) -> list[int]:
    """Ids of rows under ``root`` whose file is not among ``present`` (deleted, moved or renamed)."""
    if count_rows(client, collection_name, folder_filter(root)) <= known:
        return []  # every row under root is a file still there (the usual case: one count, no listing)
    return [i for i in rows_under(client, collection_name, root) if i not in present]


class ImageFiles:  # a torch Dataset: torch is imported only when there is work to do
    """The reader: item ``i`` is ``(i, uint8 pixels or None, reason it was skipped)``."""

    def __init__(self, files: list[FileInfo], size: int = 224, max_side: int | None = None):
        self.files, self.size, self.max_side = files, size, max_side

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from .encoders import pixels

        try:
            return i, pixels(load_image(self.files[i].filepath, self.max_side), self.size), ""
        except Exception as exc:  # any unreadable file is skipped, never the whole batch
            return i, None, skip_reason(exc)


def skip_reason(exc: Exception) -> str:
    """Why a file was skipped, as the report lists it."""
    return f"{type(exc).__name__}: {str(exc)[:200] or 'unreadable image'}"


def screen_files(plan: IngestPlan) -> None:
    """Move the files whose header already shows them unreadable from ``plan.todo`` to its skipped
    list, before any model is loaded (a folder whose only news is a broken file loads none)."""
    todo = []
    for info in plan.todo:
        try:
            check_image(info.filepath)
        except Exception as exc:
            plan.skipped.append((info.filepath, skip_reason(exc)))
            if info.id in plan.changed:  # its row holds the vector of what it was before
                plan.gone.append(info.id)
        else:
            todo.append(info)
    plan.todo = todo


def collate(items) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
    """Stack the good images of a batch; keep the indices so paths stay aligned with vectors."""
    good = [(i, p) for i, p, _ in items if p is not None]
    batch = np.stack([p for _, p in good]) if good else None
    return [i for i, _ in good], batch, [(i, reason) for i, p, reason in items if p is None]


def read_batches(files: list[FileInfo], size: int = 224, batch_size: int = 32,
                 num_workers: int | None = None, max_side: int | None = None,
                 overlap: bool = True) -> Iterator:
    """Batches of ``(indices, uint8 pixels (n, size, size, 3), [(index, reason skipped)])``.

    With ``num_workers`` > 0, DataLoader worker processes decode ahead of the model (machines with
    many cores). With 0, threads of this process decode: ahead of the model (from a reader
    thread) when ``overlap`` (the model runs on a GPU), else each batch by every core at once, between the
    model's forward passes (the model runs on this CPU and already uses every core: decoding at the
    same time only makes them fight, measured 0.88 of the ceiling against 0.94 on 2 cores).
    """
    if num_workers is None:
        num_workers = default_workers()
    num_workers = min(num_workers, max(0, (len(files) - 1) // batch_size))
    dataset = ImageFiles(files, size, max_side)
    if not num_workers:
        batches = decode_in_threads(dataset, batch_size, os.cpu_count() or 1)
        return prefetch(batches) if overlap else batches
    from torch.utils.data import DataLoader

    return iter(DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                           prefetch_factor=4, persistent_workers=False))


def decode_in_threads(dataset: ImageFiles, batch_size: int, threads: int) -> Iterator:
    """Each batch decoded by ``threads`` threads at once (PIL releases the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="textimg-decode") as pool:
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            yield collate(list(pool.map(dataset.__getitem__, indices)))


def prefetch(batches: Iterator, depth: int = 2) -> Iterator:
    """Produce the next batches in a thread while the model encodes this one on a GPU."""
    import queue
    import threading

    ready, done, failure = queue.Queue(maxsize=depth), object(), []

    def fill():
        try:
            for batch in batches:
                ready.put(batch)
        except BaseException as exc:  # handed to the consumer below
            failure.append(exc)
        finally:
            ready.put(done)

    threading.Thread(target=fill, daemon=True, name="textimg-reader").start()
    while (batch := ready.get()) is not done:
        yield batch
    if failure:
        raise failure[0]


def default_workers() -> int:
    """Decoder processes: none up to 4 cores, where processes cost more than they save (measured on
    2 cores: threads decode instead); about half the cores above that, the model uses the rest."""
    cores = os.cpu_count() or 2
    return 0 if cores <= 4 else min(8, cores // 2)


def ingest(client, collection_name: str, encoder, plan: IngestPlan, batch_size: int = 32,
           num_workers: int | None = None, write_every: int = 256, progress: bool = True,
           verbose: bool = True) -> IngestReport:
    """Encode ``plan.todo`` in batches and upsert the vectors in chunks of ``write_every`` rows."""
    start = time.perf_counter()
    report = IngestReport(unchanged=plan.unchanged, skipped=list(plan.skipped))
    if plan.gone:
        client.delete(collection_name, ids=plan.gone)
        report.removed = len(plan.gone)
    if plan.todo:
        with ThreadPoolExecutor(1, thread_name_prefix="textimg-create") as pool:
            if client.has_collection(collection_name):  # checked against the model before any work
                create_collection(client, collection_name, encoder.dim, encoder.name)
                created = pool.submit(lambda: None)
            else:  # Milvus takes about 0.5 s to create and load a collection: encode meanwhile
                created = pool.submit(create_collection, client, collection_name, encoder.dim, encoder.name)
            _run(client, collection_name, encoder, plan, report, batch_size, num_workers, write_every,
                 progress, verbose, created)
    if client.has_collection(collection_name):
        report.total = count_rows(client, collection_name)
    report.seconds = time.perf_counter() - start
    return report


def _run(client, collection_name, encoder, plan, report, batch_size, num_workers, write_every,
         progress, verbose, created: Future) -> None:
    """The read -> encode -> write loop, timed per stage; writes what it has on Ctrl-C."""
    from tqdm.auto import tqdm

    side = 2 * encoder.resolution
    batches = read_batches(plan.todo, encoder.resolution, batch_size, num_workers, side,
                           overlap=encoder.device != "cpu")
    buffer, broken, timer = [], [], report.stage_seconds
    bar = tqdm(total=len(plan.todo), unit="img", desc="indexing", disable=not progress)
    try:
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)
            timer["read"] += time.perf_counter() - t0
            if item is None:
                break
            indices, batch, errors = item
            for i, reason in errors:
                report.skipped.append((plan.todo[i].filepath, reason))
                if plan.todo[i].id in plan.changed:  # its row holds the vector of what it was before
                    broken.append(plan.todo[i].id)
                if verbose:
                    bar.write(f"skipping {plan.todo[i].filepath}: {reason}", file=sys.stderr)
            if batch is not None:
                t0 = time.perf_counter()
                image_embs = encoder.encode_images(batch)
                timer["encode"] += time.perf_counter() - t0
                buffer += [_row(plan.todo[i], emb) for i, emb in zip(indices, image_embs)]
            if len(buffer) >= write_every:
                report.indexed += _write(client, collection_name, buffer, timer, created)
            bar.update(len(indices) + len(errors))
    finally:
        report.indexed += _write(client, collection_name, buffer, timer, created)
        if broken:
            client.delete(collection_name, ids=broken)
            report.removed += len(broken)
        bar.close()


def _row(info: FileInfo, emb) -> dict:
    return {"id": info.id, "filepath": info.filepath, "label": info.label[:512],
            "size": info.size, "mtime": info.mtime, "vector": emb.tolist()}


def _write(client, collection_name: str, buffer: list[dict], timer: dict, created: Future) -> int:
    """Upsert and empty the buffer (once the collection exists); returns how many rows were written."""
    t0 = time.perf_counter()
    created.result()  # raises here if creating the collection failed
    n = len(buffer)
    upsert_rows(client, collection_name, buffer)
    buffer.clear()
    timer["write"] += time.perf_counter() - t0
    return n


def index_folder(client, collection_name: str, folder: str | os.PathLike, encoder, **options) -> IngestReport:
    """Index ``folder`` incrementally. ``encoder`` is an Encoder, or a function that loads one:
    it is then called only when some new or changed file is not plainly unreadable (an unchanged
    re-run, or one whose only news is an empty file or a saved web page, loads no model)."""
    model = None if callable(encoder) else encoder.name
    plan = plan_ingestion(client, collection_name, folder, model=options.pop("model", model),
                          remove_missing=options.pop("remove_missing", True))
    if plan.todo and callable(encoder):
        screen_files(plan)
        encoder = encoder() if plan.todo else None
    return ingest(client, collection_name, encoder, plan, **options)
