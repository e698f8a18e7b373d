"""Ingestion: read -> encode -> write, in batches, incremental, skipping bad files one by one.

``plan_ingestion`` works out what to do without loading a model; then the runner (``ingest``) makes
three timed calls per batch, as clip-retrieval's runner does: the reader (``read_batches``) yields
decoded pixels, the encoder (``Encoder.encode_images``) turns them into vectors, and the ``Writer``
buffers the rows, upserts them, deletes the rows of files gone or broken, and flushes at the end.
"""

from __future__ import annotations

import contextvars
import os
import queue
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from pymilvus import MilvusException

from .config import TextimgError, resolved_path
from .data import (IMAGE_EXTENSIONS, check_image, label_for, load_image, pixels, raw_pair, walk_images)
from .milvus import check_writable
from .service.client import WriteFailed
from .store import (TEXT_FIELD, WORDS_PENDING, check_collection, count_rows, create_collection, each_page,
                    fetch_file_stats, file_metadata, folder_filter, has_metadata, has_words, metadata_missing_message,
                    path_id, rows_under, upgrade_collection, upsert_rows)

if TYPE_CHECKING:  # torch, and so ``encoders``, is imported only where there is something to encode
    from .encoders import Encoder
    from .ocr import WordReader

__all__ = ["FileInfo", "IndexOptions", "IngestReport", "LoadLater", "Writer", "default_workers",
           "index_folder", "read_batches", "row_for", "run"]


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
    skipped: list[tuple[str, str]] = field(default_factory=list)  # files that could not even be listed
    gone: list[int] = field(default_factory=list)  # rows of files no longer in the folder
    changed: set[int] = field(default_factory=set)  # ids in ``todo`` that have an older row
    unreadable: list[tuple[FileInfo, str]] = field(default_factory=list)  # from ``todo``, by ``screen_files``
    words: bool = False  # the collection stores the words read in its pictures (``--ocr``)
    pending: list[dict] = field(default_factory=list)  # {"id", "filepath"} of rows whose words are still to be read


@dataclass
class IngestReport:
    """What a run did: counts, every skipped file with its reason, and time per stage."""

    indexed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    removed: int = 0  # rows of files deleted, moved, renamed or broken since they were indexed
    words_read: int = 0  # rows indexed before, whose words were read now (``--ocr`` on an older collection)
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: {"read": 0.0, "encode": 0.0, "write": 0.0})
    read_as: dict = field(default_factory=dict)  # "<suffix> <how>" -> images read that way (``load_image``)

    def read_paths(self) -> str:
        """How each kind of file was read, one line: ``.heic embedded thumbnail 40, .jpg 1/4 scale 12``."""
        return ", ".join(f"{kind} {n}" for kind, n in sorted(self.read_as.items()))

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
        if self.words_read:
            lines.append(f"read the words of {self.words_read} images indexed before ({self.seconds:.1f}s)")
        return "\n".join(lines + [self.summary()])


@contextmanager
def timed(stage_seconds: dict, stage: str):
    """Add the time spent inside the block to ``stage_seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stage_seconds[stage] += time.perf_counter() - start


# The plan: which files to encode, which rows to remove -------------------------------------------

@dataclass(frozen=True)
class IndexOptions:
    """How ``index_folder`` reads, encodes and writes: the files it takes (hidden folders, ``exclude``
    globs), whether rows of files gone are removed, batches, reader workers (``None``: as many as
    helps, 0: read in this thread), rows per write, and what it prints."""

    batch_size: int = 32
    num_workers: int | None = None
    write_every: int = 256
    remove_missing: bool = True
    include_hidden: bool = False
    exclude: tuple[str, ...] = ()
    upgrade: bool = False  # a collection made before photo metadata was stored gets it first
    ocr: bool = False  # read the words in the pictures (the ocr extra); a collection with words keeps reading them
    progress: bool = True
    verbose: bool = True


@dataclass(frozen=True)
class LoadLater:
    """An encoder that ``index_folder`` loads only when some new or changed file needs encoding: the
    model's name (checked against the collection first) and the function that loads it."""

    name: str
    load: Callable[[], Encoder]


def index_folder(client, collection_name: str, folder: str | os.PathLike, encoder: Encoder | LoadLater,
                 options: IndexOptions = IndexOptions(), **changes) -> IngestReport:
    """Index the images under ``folder`` into ``collection_name``, incrementally: files already indexed
    with the same size and mtime are left alone, changed ones replaced, and (``remove_missing``) the
    rows of files no longer there removed. Hidden and system folders are left out unless
    ``include_hidden``, and so are the paths matching an ``exclude`` glob (see ``list_image_paths``).

    ``options`` (an ``IndexOptions``), with any of its fields changed by keyword:
    ``index_folder(client, name, folder, encoder, batch_size=64, progress=False)``. With a ``LoadLater``
    for ``encoder``, an unchanged re-run loads no model."""
    options = replace(options, **changes)
    model = encoder.name
    check_writable(client)  # a read-only or full Lite file says so now, not after the model is loaded
    upgrade_if_asked(client, collection_name, model, options)
    plan = plan_ingestion(client, collection_name, folder, model=model, remove_missing=options.remove_missing,
                          include_hidden=options.include_hidden, exclude=options.exclude)
    plan.words = options.ocr or (client.has_collection(collection_name) and has_words(client, collection_name))
    if plan.words:
        plan.pending = pending_words(client, collection_name, plan)
    if isinstance(encoder, LoadLater):
        screen_files(plan)
        encoder = encoder.load() if plan.todo else None
    return ingest(client, collection_name, encoder, plan, options)


def upgrade_if_asked(client, collection_name: str, model: str, options: IndexOptions) -> None:
    """With ``upgrade``, a collection made before photo metadata was stored gets it; with ``ocr``, one
    made without words gets their fields (its vectors kept, its rows' words then read by ``ingest``).
    ``ocr`` without the ocr extra installed stops here, in one line."""
    if options.ocr:
        from .ocr import check_ocr

        check_ocr()
    if not client.has_collection(collection_name):
        return
    metadata = options.upgrade and not has_metadata(client, collection_name)
    words = options.ocr and not has_words(client, collection_name)
    if metadata or words:
        check_collection(client, collection_name, model)
        rows = upgrade_collection(client, collection_name, words=words)
        if options.verbose:
            what = "date taken, camera and place" + (", and a place for the words in their pictures" if words else "")
            print(f"upgraded {collection_name!r}: {rows} rows now store {what}", file=sys.stderr)


def pending_words(client, collection_name: str, plan: IngestPlan) -> list[dict]:
    """``{"id", "filepath"}`` of the rows under ``plan.folder`` whose words are not read yet and whose file
    is neither to be encoded again nor gone (an unchanged re-run finds none, in one query)."""
    if not client.has_collection(collection_name) or not has_words(client, collection_name):
        return []
    root, skip = str(plan.folder) + os.sep, {f.id for f in plan.todo} | set(plan.gone)
    found = []
    each_page(client, collection_name, lambda page: found.extend(
        dict(row) for row in page if row["filepath"].startswith(root) and row["id"] not in skip),
        f"{folder_filter(plan.folder)} and {WORDS_PENDING} == 1", ["id", "filepath"])
    return found


def plan_ingestion(client, collection_name: str, folder: str | os.PathLike, model: str | None = None,
                   remove_missing: bool = True, include_hidden: bool = False,
                   exclude: tuple[str, ...] = ()) -> IngestPlan:
    """List the images under ``folder`` and keep those not indexed with the same size and mtime; with
    ``remove_missing``, also find the rows of files under ``folder`` that are not there any more (or
    no longer listed: hidden, excluded, a RAW file whose JPEG came beside it)."""
    root = resolved_path(folder)
    files, skipped, walked = stat_files(root, include_hidden, exclude)
    if not files and not skipped:
        raise TextimgError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                           "in any letter case, in sub-folders too)")
    known, gone = {}, []
    if client.has_collection(collection_name):
        if model is not None:
            check_collection(client, collection_name, model)
        if not has_metadata(client, collection_name):
            raise TextimgError(metadata_missing_message(collection_name))
        client.load_collection(collection_name)
        known = fetch_file_stats(client, collection_name, [f.id for f in files])
        if remove_missing:
            gone = find_gone(client, collection_name, walked, {f.id for f in files}, len(known))
    todo = [f for f in files if known.get(f.id) != (f.size, f.mtime)]
    return IngestPlan(root, todo, len(files) - len(todo), skipped, gone, {f.id for f in todo} & set(known))


def stat_files(root: Path, include_hidden: bool = False,
               exclude: tuple[str, ...] = ()) -> tuple[list[FileInfo], list[tuple[str, str]], list[Path]]:
    """Every image file under ``root`` with its size and mtime, ``(path, reason)`` for those that
    cannot even be looked at (a broken link, a name Milvus cannot store) or are the RAW half of a
    RAW + JPEG pair, and the real folders walked (``walk_images``)."""
    files, skipped = [], []
    paths, walked = walk_images(root, include_hidden, exclude)
    for path in paths:
        if (pair := raw_pair(path)) is not None:
            skipped.append((str(path), f"RAW file beside {pair.name}: one photo, indexed from {pair.name}"))
            continue
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
        home = max((w for w in walked if w in path.parents), key=lambda w: len(w.parts), default=root)
        files.append(FileInfo(str(path), st.st_size, st.st_mtime_ns, path_id(str(path)), label_for(path, home)))
    return files, skipped, walked


def find_gone(client, collection_name: str, roots: list[Path], present: set[int], known: int) -> list[int]:
    """Ids of rows under the folders walked (``roots``) whose file is not among ``present`` (deleted,
    moved or renamed)."""
    if sum(count_rows(client, collection_name, folder_filter(root)) for root in roots) <= known:
        return []  # every row under the roots is a file still there (the usual case: one count, no listing)
    return sorted({i for root in roots for i in rows_under(client, collection_name, root) if i not in present})


def screen_files(plan: IngestPlan) -> None:
    """Move the files whose header already shows them unreadable from ``plan.todo`` to
    ``plan.unreadable``, before any model is loaded (a folder whose only news is a broken file loads none)."""
    todo = []
    for info in plan.todo:
        try:
            check_image(info.filepath)
        except Exception as exc:
            plan.unreadable.append((info, skip_reason(exc)))
        else:
            todo.append(info)
    plan.todo = todo


def skip_reason(exc: Exception) -> str:
    """Why a file was skipped, as the report lists it."""
    return f"{type(exc).__name__}: {str(exc)[:200] or 'unreadable image'}"


# The runner: reader -> encoder -> writer ----------------------------------------------------------

def ingest(client, collection_name: str, encoder: Encoder | None, plan: IngestPlan,
           options: IndexOptions = IndexOptions()) -> IngestReport:
    """Carry out ``plan``: remove the rows it names, encode ``plan.todo`` in batches and write the rows."""
    start = time.perf_counter()
    report = IngestReport(unchanged=plan.unchanged, skipped=list(plan.skipped))
    with Writer(client, collection_name, report, options.write_every, plan.changed) as writer:
        writer.delete(plan.gone)
        for info, reason in plan.unreadable:
            writer.skip(info, reason)
        words = word_reader(plan)
        if plan.todo:
            writer.create_collection(encoder.dim, encoder.name, plan.words)
            batches = read_batches(plan.todo, encoder.resolution, options.batch_size, options.num_workers,
                                   max_side=2 * encoder.resolution, overlap=encoder.device != "cpu")
            run(batches, encoder, writer, plan.todo, options.progress, options.verbose, words)
        if plan.pending:
            read_pending_words(plan.pending, words, writer, options.progress)
    if report.indexed or report.removed:
        check_writable(client, after_writes=True)  # each write was checked; a full disk may not log it
    if client.has_collection(collection_name):
        report.total = count_rows(client, collection_name)
    report.seconds = time.perf_counter() - start
    return report


def word_reader(plan: IngestPlan) -> WordReader | None:
    """The OCR engine (models loaded on its first image) when the plan has pictures whose words to read."""
    if not plan.words or not (plan.todo or plan.pending):
        return None
    from .ocr import WordReader, check_ocr

    check_ocr()
    return WordReader()


def run(batches: Iterator, encoder: Encoder, writer: Writer, files: list[FileInfo], progress: bool = True,
        verbose: bool = True, words: WordReader | None = None) -> None:
    """Per batch: take it from the reader, encode its good images, read their words (``words``), hand
    the rows to the writer (each stage timed); a file the reader could not decode is skipped, and said
    so with ``verbose``."""
    from tqdm.auto import tqdm

    stage_seconds = writer.report.stage_seconds
    with tqdm(total=len(files), unit="img", desc="indexing", disable=not progress) as bar:
        while True:
            with timed(stage_seconds, "read"):
                batch = next(batches, None)
            if batch is None:
                return
            indices, images, errors = batch
            for i, reason in errors:
                writer.skip(files[i], reason)
                if verbose:
                    bar.write(f"skipping {files[i].filepath}: {reason}", file=sys.stderr)
            if images is not None:
                with timed(stage_seconds, "encode"):
                    image_embs = encoder.encode_images(images)
                texts = read_words(words, [files[i].filepath for i in indices], stage_seconds)
                writer.add([row_for(files[i], emb, text) for i, emb, text in zip(indices, image_embs, texts)])
            count_reads(writer.report, batch, bar)
            bar.update(len(indices) + len(errors))


def count_reads(report: IngestReport, batch, bar) -> None:
    """Add a batch's ``read_as`` counts to the report and show them on the progress bar (one line a run)."""
    read_as = getattr(batch, "read_as", {})  # a reader of plain tuples says nothing
    for kind, n in read_as.items():
        report.read_as[kind] = report.read_as.get(kind, 0) + n
    if read_as:
        bar.set_postfix_str(report.read_paths(), refresh=False)


def read_words(words: WordReader | None, paths: list[str], stage_seconds: dict) -> list[str | None]:
    """The words in each picture (timed as the stage "words"); ``None`` each without a reader, and ""
    for a picture whose words cannot be read (its vector is still stored)."""
    if words is None:
        return [None] * len(paths)
    texts = []
    stage_seconds.setdefault("words", 0.0)
    with timed(stage_seconds, "words"):
        for path in paths:
            try:
                texts.append(words.read_file(path))
            except Exception:  # CLIP could read it: the row is kept, without words
                texts.append("")
    return texts


def read_pending_words(pending: list[dict], words: WordReader, writer: Writer, progress: bool = True,
                       batch_size: int = 32) -> None:
    """Read the words of rows indexed before (``--ocr`` on an older collection) and write each row back
    with them, its vector unchanged (nothing is encoded again); rows are fetched ``batch_size`` at a time."""
    from tqdm.auto import tqdm

    client, name, stage_seconds = writer.client, writer.collection_name, writer.report.stage_seconds
    for start in tqdm(range(0, len(pending), batch_size), unit="batch", desc="reading words", disable=not progress):
        ids = ",".join(str(row["id"]) for row in pending[start:start + batch_size])
        rows = [dict(row) for row in client.query(name, filter=f"id in [{ids}]", output_fields=["*"])]
        texts = read_words(words, [row["filepath"] for row in rows], stage_seconds)
        rows = [{**{k: v for k, v in row.items() if k != WORDS_PENDING}, TEXT_FIELD: text}
                for row, text in zip(rows, texts)]
        with timed(stage_seconds, "write"), writer.said_if_dropped():
            upsert_rows(client, name, rows)
        writer.report.words_read += len(rows)


def row_for(info: FileInfo, emb: np.ndarray, text: str | None = None) -> dict:
    """The collection's row for one file and its vector, with what the photo says about itself (its
    header only is read: date taken, camera, place, size, see ``data.photo_metadata``) and, in a
    collection with words, the words read in it (``text``)."""
    row = {"id": info.id, "filepath": info.filepath, "label": info.label[:512],
           "size": info.size, "mtime": info.mtime, "vector": emb.tolist()}
    return {**row, **file_metadata(row), **({} if text is None else {TEXT_FIELD: text})}


# The writer -------------------------------------------------------------------------------------

class CollectionDropped(TextimgError):
    """The collection was dropped while rows were written to it: writing the rest cannot help."""


class Writer:
    """The writer: buffers rows and upserts them ``write_every`` at a time once the collection exists,
    deletes the rows of files gone or broken, and on leaving its ``with`` block (Ctrl-C included)
    writes what it still holds. What it did is counted in ``report``."""

    def __init__(self, client, collection_name: str, report: IngestReport, write_every: int = 256,
                 changed: set[int] = frozenset()):
        self.client, self.collection_name, self.report = client, collection_name, report
        self.write_every, self.changed = write_every, changed
        self.buffer: list[dict] = []
        self.stale: list[int] = []  # rows of changed files that are now unreadable
        self.created: Future | None = None
        self._pool: ThreadPoolExecutor | None = None

    def create_collection(self, dim: int, model: str, words: bool = False) -> None:
        """Check an existing collection against the model now; create a new one (with the fields of the
        pictures' words when ``words``) in a thread, so the first batches are encoded while Milvus
        creates and loads it (waiting, not computing)."""
        if self.client.has_collection(self.collection_name):
            create_collection(self.client, self.collection_name, dim, model)
            self.created = Future()
            self.created.set_result(None)
            return
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="textimg-create")
        # in this context: pymilvus' logging stays as the caller set it (``milvus.pymilvus_log_level``)
        self.created = self._pool.submit(contextvars.copy_context().run, create_collection, self.client,
                                         self.collection_name, dim, model, words)

    def skip(self, info: FileInfo, reason: str) -> None:
        """Record a file that cannot be read. A changed file that is now unreadable also loses its row,
        which holds the vector of what the file was before."""
        self.report.skipped.append((info.filepath, reason))
        if info.id in self.changed:
            self.stale.append(info.id)

    def add(self, rows: list[dict]) -> None:
        """Buffer rows; write them once there are ``write_every``."""
        self.buffer += rows
        if len(self.buffer) >= self.write_every:
            self.flush()

    def flush(self) -> None:
        """Upsert the buffer (once the collection exists) and empty it."""
        with timed(self.report.stage_seconds, "write"):
            if self.created is not None:
                self.created.result()  # raises here if creating the collection failed
            with self.said_if_dropped():
                upsert_rows(self.client, self.collection_name, self.buffer)
            self.report.indexed += len(self.buffer)
            self.buffer.clear()

    def delete(self, ids: list[int]) -> None:
        """Delete the rows ``ids`` now."""
        if ids:
            with self.said_if_dropped():
                self.client.delete(self.collection_name, ids=list(ids))
            self.report.removed += len(ids)

    @contextmanager
    def said_if_dropped(self):
        """A write refused because the collection was dropped meanwhile (``textimg drop``) is one line."""
        try:
            yield
        except MilvusException:
            if self.client.has_collection(self.collection_name):
                raise
            raise CollectionDropped(f"collection {self.collection_name!r} was dropped while this index ran: run "
                                    "the same command again to index the folder into a new one") from None

    def close(self, write: bool = True) -> None:
        """Write the last rows, then delete the rows of changed files found unreadable (unless ``write``
        is False: Milvus could not save the rows, and trying again would fail the same way)."""
        try:
            if write and self.created is not None:
                self.flush()
            if write:
                self.delete(self.stale)
            self.stale = []
        finally:
            if self._pool is not None:
                self._pool.shutdown()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(write=not isinstance(exc, (WriteFailed, CollectionDropped)))


# The reader -------------------------------------------------------------------------------------

class ImageFiles:  # a torch Dataset: torch is imported only when there is work to do
    """The reader's files: item ``i`` is ``(i, uint8 pixels or None, reason it was skipped, how it was
    read)``; a HEIC/HEIF photo is read from its embedded thumbnail when that covers ``size`` pixels."""

    def __init__(self, files: list[FileInfo], size: int = 224, max_side: int | None = None):
        self.files, self.size, self.max_side = files, size, max_side

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i].filepath
        try:
            img = load_image(path, self.max_side, min_side=self.size)
            return i, pixels(img, self.size), "", f"{Path(path).suffix.lower()} {img.info.get('read_as', '')}"
        except Exception as exc:  # any unreadable file is skipped, never the whole batch
            return i, None, skip_reason(exc), ""


class Batch(tuple):
    """``(indices, uint8 pixels or None, [(index, reason skipped)])``, and ``read_as``: how many of its
    images were read each way (``{".heic embedded thumbnail": 30}``); pickles whole from a worker."""

    read_as: dict


def collate(items) -> Batch:
    """Stack the good images of a batch; keep the indices so paths stay aligned with vectors."""
    good = [(i, p) for i, p, *_ in items if p is not None]
    batch = Batch(([i for i, _ in good], np.stack([p for _, p in good]) if good else None,
                   [(i, reason) for i, p, reason, _ in items if p is None]))
    batch.read_as = dict(Counter(read_as for *_, read_as in items if read_as))
    return batch


def read_batches(files: list[FileInfo], size: int = 224, batch_size: int = 32,
                 num_workers: int | None = None, max_side: int | None = None,
                 overlap: bool = True) -> Iterator:
    """The reader: batches of ``(indices, uint8 pixels (n, size, size, 3), [(index, reason skipped)])``.

    With ``num_workers`` > 0, DataLoader worker processes decode ahead of the model (machines with
    many cores). With 0, threads of this process decode: ahead of the model, from a reader thread,
    when ``overlap`` (the model runs on a GPU); else each batch by every core at once, between the
    model's forward passes (the model runs on this CPU and already uses every core, so decoding at the
    same time would only make them compete).
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
                           prefetch_factor=4, persistent_workers=False, multiprocessing_context=worker_start()))


def worker_start() -> str:
    """How decoder processes start: never by forking this process, whose Milvus (gRPC) and torch threads
    may hold locks at that instant (a forked child can wait on them forever); a fresh fork server does it."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def decode_in_threads(dataset: ImageFiles, batch_size: int, threads: int) -> Iterator:
    """Each batch decoded by ``threads`` threads at once (PIL releases the GIL while it decodes)."""
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="textimg-decode") as pool:
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            yield collate(list(pool.map(dataset.__getitem__, indices)))


def prefetch(batches: Iterator, depth: int = 2) -> Iterator:
    """Produce the next batches in a thread while the model encodes this one on a GPU."""
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
    """Decoder processes: none up to 4 cores, where starting processes costs more than it saves and
    threads decode instead; above that, about half the cores (at most 8), the model uses the rest."""
    cores = os.cpu_count() or 2
    return 0 if cores <= 4 else min(8, cores // 2)
