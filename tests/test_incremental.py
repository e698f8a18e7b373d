"""Re-indexing a folder that changed: new and edited files are encoded, deleted or renamed ones leave."""

from __future__ import annotations

import json
import os

from conftest import shapes_folder


def indexed_paths(cli, uri) -> list[str]:
    """Every file path in the collection, as ``search --json`` returns them."""
    run = cli("search", "a shape", "--uri", uri, "-k", 1000, "--json")
    assert run.code == 0, run.err
    return sorted(hit["filepath"] for hit in json.loads(run.out))


def test_deleted_renamed_and_edited_files_are_followed(cli, tmp_path, shapes_encoder):
    folder, uri = shapes_folder(tmp_path / "a_b"), tmp_path / "milvus.db"
    neighbour = shapes_folder(tmp_path / "axb")  # matches "a_b/%" in Milvus' like: must be left alone
    assert cli("index", folder, "--uri", uri, "-q").summary["total"] == 40
    assert cli("index", neighbour, "--uri", uri, "-q").summary["total"] == 80

    (folder / "red_circle_0000.png").unlink()
    (folder / "blue_star_0000.png").unlink()
    (folder / "green_cross_0000.png").rename(folder / "renamed.png")
    os.utime(folder / "white_square_0000.png", ns=(1, 1))  # edited
    run = cli("index", folder, "--uri", uri, "-q")
    assert run.summary == {"indexed": 2, "skipped": 0, "unchanged": 36, "total": 78}
    assert "removed 3 rows of files no longer in the folder or no longer readable" in run.out.splitlines()

    assert indexed_paths(cli, uri) == sorted(str(p) for p in [*folder.iterdir(), *neighbour.iterdir()])
    again = cli("index", folder, "--uri", uri, "-q")
    assert again.summary == {"indexed": 0, "skipped": 0, "unchanged": 38, "total": 78}
    assert "removed" not in again.out


def test_keep_missing_keeps_rows_of_files_that_are_gone(cli, tmp_path, shapes_encoder):
    folder, uri = shapes_folder(tmp_path / "photos"), tmp_path / "milvus.db"
    cli("index", folder, "--uri", uri, "-q")
    for path in list(folder.iterdir())[:5]:
        path.unlink()
    kept = cli("index", folder, "--uri", uri, "-q", "--keep-missing")
    assert kept.summary == {"indexed": 0, "skipped": 0, "unchanged": 35, "total": 40}
    removed = cli("index", folder, "--uri", uri, "-q")
    assert removed.summary == {"indexed": 0, "skipped": 0, "unchanged": 35, "total": 35}
    assert len(indexed_paths(cli, uri)) == 35


def test_a_file_that_breaks_after_indexing_leaves_the_collection(cli, tmp_path, shapes_encoder):
    folder, uri = shapes_folder(tmp_path / "photos"), tmp_path / "milvus.db"
    cli("index", folder, "--uri", uri, "-q")
    damaged = folder / "red_circle_0000.png"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a sync that stopped half-way
    run = cli("index", folder, "--uri", uri, "-q")
    assert run.summary == {"indexed": 0, "skipped": 1, "unchanged": 39, "total": 39}
    assert f"skipped {damaged}: UnreadableImage: truncated image file" in run.out
    assert str(damaged) not in indexed_paths(cli, uri)


def test_one_folder_has_one_spelling_whatever_the_links_and_dots(cli, tmp_path, shapes_encoder):
    root, uri = tmp_path / "photos", tmp_path / "milvus.db"
    shapes_folder(root / "2024")
    (root / "2023").mkdir()
    (root / "2023" / "link_to_2024").symlink_to(root / "2024", target_is_directory=True)
    (tmp_path / "Pictures").symlink_to(root, target_is_directory=True)

    first = cli("index", root, "--uri", uri, "-q")
    assert first.summary == {"indexed": 40, "skipped": 0, "unchanged": 0, "total": 40}
    assert all(path.startswith(f"{root}/2024/") for path in indexed_paths(cli, uri))  # the real folder's paths
    for spelling in (root / "2024", tmp_path / "Pictures", root / ".." / "photos", tmp_path / "Pictures" / "2024"):
        again = cli("index", spelling, "--uri", uri, "-q")
        assert again.summary == {"indexed": 0, "skipped": 0, "unchanged": 40, "total": 40}, spelling


def test_new_files_that_are_plainly_broken_load_no_model(cli, tmp_path, shapes_encoder):
    """An empty file or a saved web page is told by its header: no model is loaded for it (here the
    model file is garbage with the shipped model's name, so loading it would fail the run)."""
    folder, uri = shapes_folder(tmp_path / "photos"), tmp_path / "milvus.db"
    cli("index", folder, "--uri", uri, "-q")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.png").write_text("<html><body>404</body></html>")
    (folder / "blue_star_0000.png").write_bytes(b"")  # indexed before, broken now
    garbage = tmp_path / "shapes-clip.pt"
    garbage.write_bytes(b"not a checkpoint")
    run = cli("index", folder, "--uri", uri, "-q", "--model", garbage, "--collection", "textimg_shapes_clip")
    assert run.code == 0, run.err
    assert run.summary == {"indexed": 0, "skipped": 3, "unchanged": 39, "total": 39}
    assert f"skipped {folder / 'empty.jpg'}: UnreadableImage: empty file (0 bytes)" in run.out
    assert "removed 1 rows of files no longer in the folder or no longer readable" in run.out
