"""What the notebooks teach by hand is what the helpers do: checked here, so the lessons need not check it.

- 00's plain path (``clip.load`` ... ``client.search``) finds the red circles for "a red circle";
- 02's hand-written schema makes the same collection as ``store.create_collection``;
- 02's batch written by hand holds exactly the rows ``index_folder`` writes for those files.
"""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from conftest import ROOT, shapes_folder
from textimg_helpers.data import label_for, list_image_paths, load_image, pixels
from textimg_helpers.ingest import index_folder
from textimg_helpers.milvus import connect
from textimg_helpers.store import create_collection, path_id

NOTEBOOKS = ROOT / "notebooks"


def code_cell(stem: str, marker: str) -> str:
    """The source of the code cell of notebook ``stem`` that contains ``marker``."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    return next(cell.source for cell in nb.cells if cell.cell_type == "code" and marker in cell.source)


@pytest.fixture
def client(tmp_path):
    client = connect(str(tmp_path / "milvus.db"))
    yield client
    client.close()


def layout(client, name: str) -> tuple:
    """What a reader of ``describe_collection`` / ``describe_index`` sees of a collection."""
    desc, index = client.describe_collection(name), client.describe_index(name, "vector")
    fields = [{key: field[key] for key in ("name", "type", "params", "is_primary", "auto_id") if key in field}
              for field in desc["fields"]]
    return (fields, desc["description"], desc["consistency_level"],
            {key: index[key] for key in ("index_type", "metric_type", "nlist")})


def test_00s_plain_path_finds_the_red_circles(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTIMG_DATA_DIR", str(tmp_path / "data"))
    nb = nbformat.read(NOTEBOOKS / "00_setup.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    search = next(cell for cell in nb.cells if cell.cell_type == "code" and "client.search(" in cell.source)
    hits = ast.literal_eval(search.outputs[-1]["data"]["text/plain"])  # [(file name, cosine), ...]
    assert len(hits) == 10 and all(name.startswith("red_circle_") for name, _ in hits), hits
    grid = next(cell for cell in nb.cells if cell.cell_type == "code" and cell.source.rstrip().endswith("grid"))
    assert "image/png" in grid.outputs[-1]["data"]


def test_02s_schema_by_hand_is_the_helpers_schema(client, shapes_encoder):
    encoder = SimpleNamespace(name=shapes_encoder.name, dim=shapes_encoder.dim)
    exec(code_cell("02_ingestion", "schema.add_field"), {"client": client, "collection_name": "by_hand",
                                                         "encoder": encoder})
    create_collection(client, "by_helper", encoder.dim, encoder.name)
    assert layout(client, "by_hand") == layout(client, "by_helper")
    assert json.loads(client.describe_collection("by_hand")["description"]) == {"model": encoder.name,
                                                                                "dim": encoder.dim}


def test_02s_batch_by_hand_holds_the_rows_index_folder_writes(client, shapes_encoder, tmp_path):
    folder = shapes_folder(tmp_path / "images", per_class=2).resolve()
    paths = list_image_paths(folder)[:64]
    batch = np.stack([pixels(load_image(path, max_side=2 * shapes_encoder.resolution), shapes_encoder.resolution)
                      for path in paths])
    by_hand_embs = shapes_encoder.encode_images(batch)
    by_hand = [{"id": path_id(str(path)), "filepath": str(path), "label": label_for(path, folder),
                "size": path.stat().st_size, "mtime": path.stat().st_mtime_ns} for path in paths]
    report = index_folder(client, "c", folder, shapes_encoder, batch_size=64, progress=False, verbose=False)
    assert report.indexed == 80 and not report.skipped
    ids = [row["id"] for row in by_hand]
    written = {row["id"]: row for row in client.get("c", ids=ids, output_fields=[*by_hand[0], "vector"])}
    assert [{key: written[i][key] for key in by_hand[0]} for i in ids] == by_hand
    index_embs = np.array([written[i]["vector"] for i in ids], dtype=np.float32)
    # both come from the same calls on the same pixels, in one batch of the same 64 images
    assert np.abs(index_embs - by_hand_embs).max() < 1e-4
    between = np.abs(by_hand_embs[:, None] - by_hand_embs[None]).max(axis=-1)
    assert between[~np.eye(len(ids), dtype=bool)].min() > 1e-2  # any two images differ far more than that
