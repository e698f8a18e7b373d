"""The Milvus token never reaches a notebook's outputs: not the settings it shows, not an error it prints.

The notebook runs in a real kernel (nbclient, as nbval does) with ``TEXTIMG_MILVUS_TOKEN`` set, and every
output it produced, text, HTML and tracebacks alike, is searched for the token.
"""

from __future__ import annotations

import json
import socket

import nbformat
from nbclient import NotebookClient

from conftest import ROOT

TOKEN = "root:N0tebook-S3cret-7788"
SETUP = ROOT / "notebooks" / "00_setup.ipynb"


def run_notebook(path, monkeypatch, tmp_path, **env) -> nbformat.NotebookNode:
    """Execute ``path`` in a fresh kernel with these ``TEXTIMG_*`` variables; errors are kept as outputs."""
    monkeypatch.setenv("TEXTIMG_MILVUS_TOKEN", TOKEN)
    monkeypatch.setenv("TEXTIMG_DATA_DIR", str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Every output of every code cell, serialised (stream text, display data, error tracebacks)."""
    return [json.dumps(output) for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


def test_setup_notebook_runs_with_a_token_and_never_shows_it(monkeypatch, tmp_path):
    nb = run_notebook(SETUP, monkeypatch, tmp_path, TEXTIMG_MILVUS_URI=str(tmp_path / "milvus.db"))
    assert errors(nb) == []
    shown = outputs(nb)
    assert any("image/png" in text for text in shown)  # the grid was drawn
    assert not [text for text in shown if TOKEN in text or "N0tebook" in text]


def test_a_failed_connection_in_a_notebook_does_not_show_the_token(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    nb = run_notebook(SETUP, monkeypatch, tmp_path, TEXTIMG_MILVUS_URI=closed)
    assert errors(nb), "connecting to a closed port should fail in the MilvusClient cell"
    assert not [text for text in outputs(nb) if TOKEN in text or "N0tebook" in text]
