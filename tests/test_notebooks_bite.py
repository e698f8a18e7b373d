"""The notebooks are their own tests: with a model that retrieves nothing, nbval must go red, and for
that reason: an assertion on what was retrieved fails, after the setup cell ran (not a crash in setup)."""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import torch

from conftest import ROOT
from textimg_helpers.config import SHAPES_CHECKPOINT
from textimg_helpers.encoders import random_model

# notebook -> what its first failing cell must hold: the assertion on the retrieved labels or measures
CHECKS = {"03_search": ("search_by_text(", "assert [hit.label for hit in hits]"),
          "05_evaluation": ("evaluate(", "assert result.recall(1) >= 0.9")}


def code_cells(stem: str) -> list[str]:
    """The sources of a notebook's code cells, numbered as nbval numbers them (``Cell 0``, ...)."""
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def first_failures(junit_xml) -> dict[str, tuple[int, str]]:
    """For each notebook with a failed cell: the number of its first failed cell and nbval's report."""
    failures = {}
    for case in ET.parse(junit_xml).iter("testcase"):
        failure = case.find("failure")
        stem = re.search(r"(\d\d_\w+)\.ipynb", case.get("classname", "") + case.get("file", "")).group(1)
        cell = int(re.fullmatch(r"Cell (\d+)", case.get("name")).group(1))
        if failure is not None and stem not in failures:
            text = (failure.get("message", "") + "\n" + (failure.text or ""))
            failures[stem] = (cell, re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text))  # colours removed
    return failures


def test_random_weights_of_the_same_shape_make_the_retrieval_checks_fail(tmp_path):
    checkpoint = tmp_path / "random_shapes.pt"  # same architecture and size, random weights
    torch.save({k: v.half() if v.is_floating_point() else v
                for k, v in random_model(str(SHAPES_CHECKPOINT)).state_dict().items()}, checkpoint)
    env = {**os.environ, "TEXTIMG_TEST_MODEL": str(checkpoint), "TMPDIR": str(tmp_path)}  # its files: in here
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--junitxml", str(tmp_path / "report.xml"), "notebooks/03_search.ipynb",
                          "notebooks/05_evaluation.ipynb"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stdout[-2000:]
    failures = first_failures(tmp_path / "report.xml")
    assert sorted(failures) == sorted(CHECKS), run.stdout[-3000:]
    for stem, (needed, assertion) in CHECKS.items():
        cell, report = failures[stem]
        sources = code_cells(stem)
        setup = next(i for i, source in enumerate(sources) if "open_session(" in source)
        assert cell > setup, f"{stem}: cell {cell} failed, not a check after the setup cell {setup}:\n{report[-3000:]}"
        assert needed in sources[cell] and assertion in sources[cell], (stem, cell, sources[cell])
        assert "AssertionError" in report, report[-3000:]
