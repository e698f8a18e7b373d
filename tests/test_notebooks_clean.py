"""Notebooks are committed clean (no outputs, no execution counts) and open the same way."""

import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\(https://colab\.research\.google\.com/github/textimg/textimg/blob/main/notebooks/"
                   r"(?P<name>[\w.-]+\.ipynb)\)")


def test_the_tutorial_is_there_in_order():
    names = [path.name for path in NOTEBOOKS]
    assert names[:5] == ["00_setup.ipynb", "01_encoders.ipynb", "02_ingestion.ipynb", "03_search.ipynb",
                         "04_visualization.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} have outputs or execution counts: run scripts/clean_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_a_title_and_a_colab_badge(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"# \S", first.source), "first cell must be an H1 title"
    badge = BADGE.search(first.source)
    assert badge and badge["name"] == path.name, "the first cell needs an Open-in-Colab badge to this notebook"
