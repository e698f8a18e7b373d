"""Each stage of ingestion alone: the reader, the writer, and the runner with a stand-in encoder."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import noise, square, truncated
from textimg_helpers.ingest import FileInfo, IngestReport, Writer, index_folder, read_batches, row_for, run
from textimg_helpers.milvus import connect
from textimg_helpers.store import count_rows, path_id

DIM = 8


def file_info(path, size: int = 1, mtime: int = 1) -> FileInfo:
    return FileInfo(str(path), size, mtime, path_id(str(path)), "label")


def unit(i: int) -> np.ndarray:
    """A unit vector pointing along axis ``i`` (so a row's vector says which file it came from)."""
    return np.eye(DIM, dtype=np.float32)[i % DIM]


def stored(client, name: str) -> dict[str, dict]:
    """``{filepath: row}`` of every row of the collection."""
    rows = client.query(name, filter="", output_fields=["filepath", "size", "vector"], limit=1000)
    return {row["filepath"]: row for row in rows}


@pytest.fixture
def client(tmp_path):
    client = connect(str(tmp_path / "milvus.db"))
    yield client
    client.close()


def test_the_writer_writes_every_write_every_rows_and_the_rest_on_leaving(client, tmp_path):
    report = IngestReport()
    files = [file_info(tmp_path / f"{i}.png") for i in range(5)]
    with Writer(client, "w", report, write_every=2) as writer:
        writer.create_collection(DIM, "test-model")
        writer.add([row_for(files[0], unit(0))])
        assert report.indexed == 0  # one row: still in the buffer
        writer.add([row_for(f, unit(i)) for i, f in enumerate(files[1:3], 1)])
        assert report.indexed == 3 and writer.buffer == []
        writer.add([row_for(f, unit(i)) for i, f in enumerate(files[3:], 3)])
        assert report.indexed == 5
        writer.add([row_for(file_info(tmp_path / "last.png"), unit(7))])
    assert report.indexed == 6 and count_rows(client, "w") == 6
    rows = stored(client, "w")
    assert [int(np.argmax(rows[f.filepath]["vector"])) for f in files] == [0, 1, 2, 3, 4]


def test_the_writer_keeps_what_it_holds_when_interrupted(client, tmp_path):
    report = IngestReport()
    with pytest.raises(KeyboardInterrupt):
        with Writer(client, "w", report, write_every=100) as writer:
            writer.create_collection(DIM, "test-model")
            writer.add([row_for(file_info(tmp_path / f"{i}.png"), unit(i)) for i in range(3)])
            raise KeyboardInterrupt
    assert report.indexed == 3 and count_rows(client, "w") == 3


def test_a_changed_file_that_is_now_unreadable_loses_its_row_a_new_one_has_none(client, tmp_path):
    was_fine, new = file_info(tmp_path / "was_fine.png"), file_info(tmp_path / "new.png")
    keep = file_info(tmp_path / "keep.png")
    with Writer(client, "w", IngestReport()) as writer:
        writer.create_collection(DIM, "test-model")
        writer.add([row_for(was_fine, unit(0)), row_for(keep, unit(1))])
    report = IngestReport()
    with Writer(client, "w", report, changed={was_fine.id}) as writer:
        writer.skip(was_fine, "UnreadableImage: truncated image file")
        writer.skip(new, "UnreadableImage: empty file (0 bytes)")
        assert count_rows(client, "w") == 2  # removed on leaving, with the last rows
    assert report.skipped == [(was_fine.filepath, "UnreadableImage: truncated image file"),
                              (new.filepath, "UnreadableImage: empty file (0 bytes)")]
    assert report.removed == 1 and list(stored(client, "w")) == [keep.filepath]


def test_the_writer_creates_nothing_when_it_has_nothing_to_write(client):
    with Writer(client, "w", IngestReport()) as writer:
        writer.delete([])
    assert not client.has_collection("w")


def test_the_reader_drops_bad_files_one_by_one_and_keeps_indices_aligned(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{i}.png")
        square(colour=colour, size=(40, 20)).save(paths[-1])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths.insert(1, empty)
    noise(size=(64, 64)).save(tmp_path / "noise.png")
    paths.insert(3, truncated(tmp_path / "cut.png", tmp_path / "noise.png"))
    batches = list(read_batches([file_info(p) for p in paths], size=16, batch_size=3, num_workers=0,
                                overlap=False))
    assert [len(indices) + len(errors) for indices, _, errors in batches] == [3, 2]
    indices = [i for batch_indices, _, _ in batches for i in batch_indices]
    errors = dict(e for _, _, batch_errors in batches for e in batch_errors)
    assert indices == [0, 2, 4] and sorted(errors) == [1, 3]
    assert "empty file" in errors[1] and "truncated" in errors[3]
    images = np.concatenate([images for _, images, _ in batches])
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert [tuple(int(c) for c in img[8, 8]) for img in images] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


class StandInEncoder:
    """Encodes a batch of pixels as the unit vector of each image's brightest channel (red, green, blue)."""

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        return np.stack([unit(int(np.argmax(img[8, 8]))) for img in images])


def test_the_runner_keeps_paths_aligned_with_vectors_across_bad_files(client, tmp_path):
    colours = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255)}
    for name, colour in colours.items():
        square(colour=colour).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"<html>not an image</html>")
    names = ["red.png", "broken.png", "green.png", "blue.png"]
    files = [file_info(tmp_path / name) for name in names]
    report = IngestReport()
    with Writer(client, "w", report) as writer:
        writer.create_collection(DIM, "test-model")
        run(read_batches(files, size=16, batch_size=2, num_workers=0, overlap=False), StandInEncoder(),
            writer, files, progress=False, verbose=False)
    assert report.indexed == 3 and [path for path, _ in report.skipped] == [str(tmp_path / "broken.png")]
    assert set(report.stage_seconds) == {"read", "encode", "write"}
    rows = stored(client, "w")
    assert {name: int(np.argmax(rows[str(tmp_path / name)]["vector"])) for name in colours} == \
        {"red.png": 0, "green.png": 1, "blue.png": 2}


def test_index_folder_refuses_an_option_it_does_not_have(client, tmp_path):
    """Options are ``IndexOptions`` fields, changed by keyword: a misspelt one is refused by name."""
    with pytest.raises(TypeError, match="batchsize"):
        index_folder(client, "w", tmp_path, StandInEncoder(), batchsize=8)
